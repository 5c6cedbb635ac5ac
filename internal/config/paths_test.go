package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/auth/authtest"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/assumerole"
	"github.com/vtk/dispenser/internal/vend/static"
)

// pathsConfig names every path-valued key with a relative path; the files
// it needs are written under dir.
const pathsConfig = `server:
  listen: 127.0.0.1:0
  tls: {cert_file: tls/cert.pem, key_file: tls/key.pem}
auth:
  jwt:
    issuer: https://issuer.test
    audience: dispenser
    keys:
      - {kid: a, public_key_file: keys/verify.pem, algorithms: [EdDSA]}
      - {kid: b, hmac_secret_file: keys/hmac.txt, algorithms: [HS256]}
    signing_key_file: keys/sign.pem
  mtls: {ca_file: tls/ca.pem, principals: [{match: "*", org: acme}]}
  sigv4: {region: us-east-1, keys: {type: file, path: state/keys.json, kek_file: keys/kek}}
admin:
  jwt: {issuer: https://issuer.test, audience: admin, keys: [{public_key_file: keys/verify.pem, algorithms: [EdDSA]}]}
backends:
  default: {type: mock}
  st: {type: static, file: creds.yaml}
tenants:
  - org: acme
    grants: [{bucket: media, prefixes: ["acme/"], operations: [get]}]
audit:
  type: sqlite
  path: state/audit.db
  mirror: state/mirror.jsonl
`

// writePathsLayout writes the configuration and every file it names
// into dir and returns the configuration's path.
func writePathsLayout(t *testing.T, dir, yml string) string {
	t.Helper()
	for _, sub := range []string{"keys", "tls", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	ca := authtest.NewCA(t, "paths-test")
	_, certPEM, keyPEM := ca.Issue(t, authtest.Leaf{CN: "dispenser", DNS: []string{"localhost"}, Server: true})
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	for name, b := range map[string][]byte{
		"keys/verify.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		"keys/sign.pem":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		"keys/hmac.txt":   []byte(strings.Repeat("h", 32)),
		"keys/kek":        []byte(base64.StdEncoding.EncodeToString(kek)),
		"tls/cert.pem":    certPEM,
		"tls/key.pem":     keyPEM,
		"tls/ca.pem":      ca.PEM,
		"creds.yaml":      []byte("credentials:\n  - {access_key_id: AKIAPATHS, secret_access_key: s}\n"),
		"dispenser.yaml":  []byte(yml),
	} {
		authtest.WriteFile(t, dir, name, b)
	}
	return filepath.Join(dir, "dispenser.yaml")
}

// TestRelativePathsResolveAgainstTheConfigFile loads a configuration from
// another working directory: every relative path names the file beside the
// configuration, paths derived from another (the checkpoint key and
// anchors beside the audit database) follow it, and the backends' own
// files are found too.
func TestRelativePathsResolveAgainstTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := writePathsLayout(t, dir, pathsConfig)
	t.Chdir(t.TempDir())
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	in := func(rel string) string { return filepath.Join(dir, rel) }
	for got, want := range map[*string]string{
		&c.Server.TLS.CertFile:             in("tls/cert.pem"),
		&c.Server.TLS.KeyFile:              in("tls/key.pem"),
		&c.Auth.JWT.Keys[0].PublicKeyFile:  in("keys/verify.pem"),
		&c.Auth.JWT.Keys[1].HMACSecretFile: in("keys/hmac.txt"),
		&c.Auth.JWT.SigningKeyFile:         in("keys/sign.pem"),
		&c.Admin.JWT.Keys[0].PublicKeyFile: in("keys/verify.pem"),
		&c.Auth.MTLS.CAFile:                in("tls/ca.pem"),
		&c.Auth.SigV4.Keys.Path:            in("state/keys.json"),
		&c.Auth.SigV4.Keys.KEKFile:         in("keys/kek"),
		&c.Audit.Path:                      in("state/audit.db"),
		&c.Audit.Mirror:                    in("state/mirror.jsonl"),
		&c.Audit.Checkpoint.SigningKeyFile: in("state/audit.db.checkpoint-key"),
		&c.Audit.AnchorDir:                 in("state/audit.db.anchors"),
	} {
		if *got != want {
			t.Errorf("got %q, want %q", *got, want)
		}
	}
	var p validate.Problems
	if vs := vend.Build(c.Backends, vend.Deps{}, &p); vs["st"] == nil {
		t.Errorf("the static backend did not find creds.yaml beside the configuration: %v", p.List())
	}
	if _, closers, err := c.Auth.BuildWith(auth.BuildDeps{}); err != nil {
		t.Errorf("authenticators: %v", err)
	} else {
		for _, cl := range closers {
			_ = cl.Close()
		}
	}
}

// TestRelativeConfigPathAndAbsoluteValues: a configuration named by a
// relative path resolves against its own directory too (paths become
// absolute, so a later change of directory cannot move them); absolute
// values, "stdout" for the mirror and explicit checkpoint files are kept.
func TestRelativeConfigPathAndAbsoluteValues(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc", "dispenser")
	elsewhere := t.TempDir()
	yml := strings.Replace(pathsConfig, "  mirror: state/mirror.jsonl\n",
		"  mirror: stdout\n  checkpoint: {signing_key_file: "+filepath.Join(elsewhere, "cp-key")+"}\n  anchor_dir: anchors\n", 1)
	yml = strings.Replace(yml, "key_file: tls/key.pem", "key_file: "+filepath.Join(root, "etc", "dispenser", "tls", "key.pem"), 1)
	writePathsLayout(t, dir, yml)
	t.Chdir(root)
	c, err := Load(filepath.Join("etc", "dispenser", "dispenser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TLS.CertFile != filepath.Join(dir, "tls/cert.pem") || !filepath.IsAbs(c.Server.TLS.CertFile) {
		t.Errorf("cert %q", c.Server.TLS.CertFile)
	}
	if c.Server.TLS.KeyFile != filepath.Join(dir, "tls", "key.pem") {
		t.Errorf("absolute key %q", c.Server.TLS.KeyFile)
	}
	if c.Audit.Mirror != "stdout" || c.Audit.Checkpoint.SigningKeyFile != filepath.Join(elsewhere, "cp-key") || c.Audit.AnchorDir != filepath.Join(dir, "anchors") {
		t.Errorf("audit %q %q %q", c.Audit.Mirror, c.Audit.Checkpoint.SigningKeyFile, c.Audit.AnchorDir)
	}
}

// TestExampleLoadsFromAnyDirectory: examples/local.yaml and
// examples/assume-role.yaml load by absolute path from elsewhere.
func TestExampleLoadsFromAnyDirectory(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	for _, name := range []string{"local.yaml", "assume-role.yaml"} {
		c, err := Load(filepath.Join(examples, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Audit.Path != filepath.Join(examples, "dispenser-audit.db") {
			t.Errorf("%s: audit database %q", name, c.Audit.Path)
		}
	}
}

// pathKey matches the YAML names of keys that hold a file or directory.
var pathKey = regexp.MustCompile(`(^|_)(file|path|dir)$|^mirror$`)

// TestEveryPathKeyIsResolved fails when a configuration field that holds a
// file or directory lacks the config tag that resolves it (so a new key
// cannot silently depend on the working directory again), or a tagged
// field is not a string.
func TestEveryPathKeyIsResolved(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, path string, check func(path string, f reflect.StructField))
	walk = func(rt reflect.Type, path string, check func(string, reflect.StructField)) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Map {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] {
			return
		}
		seen[rt] = true
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			check(path+"."+name, f)
			walk(f.Type, path+"."+name, check)
		}
	}
	found := 0
	check := func(path string, f reflect.StructField) {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		tag := f.Tag.Get("config")
		if tag != "" {
			found++
			if f.Type.Kind() != reflect.String {
				t.Errorf("%s: config:%q on a %s", path, tag, f.Type)
			}
			return
		}
		if pathKey.MatchString(name) && f.Type.Kind() == reflect.String {
			t.Errorf("%s looks like a file or directory but has no config:\"path\" tag", path)
		}
	}
	walk(reflect.TypeFor[Config](), "", check)
	walk(reflect.TypeFor[static.Options](), "backends.static", check)
	walk(reflect.TypeFor[assumerole.Options](), "backends.assume-role", check)
	if found < 12 {
		t.Errorf("only %d tagged path fields found; the walk is broken", found)
	}
}
