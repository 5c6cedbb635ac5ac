// Package static is the `static` backend: long-lived keys from a file,
// chosen by tenant and/or bucket and handed out with a configurable
// Expiration so clients refetch (and pick up rotated keys). Static keys
// cannot be scoped: the session policy is not applied to them, which the
// dispenser says at startup.
package static

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
)

// Options of a static backend.
type Options struct {
	// File holds the credentials (YAML or JSON).
	File string `yaml:"file" config:"path"`
	// Expiration is the lifetime advertised to clients.
	Expiration duration.Duration `yaml:"expiration"`
}

// File is the credentials file layout.
type File struct {
	Credentials []Entry `yaml:"credentials" json:"credentials"`
}

// Entry is one key pair, selected by org and/or bucket (empty = any).
type Entry struct {
	Org                string `yaml:"org" json:"org"`
	Bucket             string `yaml:"bucket" json:"bucket"`
	AccessKeyID        string `yaml:"access_key_id" json:"access_key_id"`
	SecretAccessKey    string `yaml:"secret_access_key" json:"secret_access_key"`
	SecretAccessKeyEnv string `yaml:"secret_access_key_env" json:"secret_access_key_env"`
	SessionToken       string `yaml:"session_token" json:"session_token"`
	SessionTokenEnv    string `yaml:"session_token_env" json:"session_token_env"`
	AccountID          string `yaml:"account_id" json:"account_id"`
}

type key struct {
	org, bucket string
	creds       vend.Credentials
}

func init() {
	vend.Register("static", func(spec vend.Spec, d vend.Deps, p *validate.Problems, path string) vend.Vendor {
		var o Options
		if !spec.Decode(&o, p, path) {
			return nil
		}
		if o.Expiration == 0 {
			o.Expiration = duration.Duration(time.Hour)
		}
		if o.Expiration.D() < 20*time.Minute || o.Expiration.D() > 12*time.Hour {
			p.Addf(validate.Join(path, "expiration"), "must be between 20m and 12h")
		} else if d.MinRemaining > 0 && o.Expiration.D() < d.MinRemaining+time.Minute {
			// Served a moment after minting and cut to whole seconds, an
			// expiration only as long as the floor is always under it.
			p.Addf(validate.Join(path, "expiration"), "must be at least server.min_remaining (%s) plus 1m, or no credential could be served", d.MinRemaining)
		}
		if o.File == "" {
			p.Addf(validate.Join(path, "file"), "is required")
			return nil
		}
		v, err := New(o, d.Now, d.Logger)
		if err != nil {
			p.Addf(validate.Join(path, "file"), "%v", err)
			return nil
		}
		return v
	})
}

// Vendor serves keys from the file.
type Vendor struct {
	opt  Options
	now  func() time.Time
	log  *zap.Logger
	keys atomic.Pointer[[]key]
}

var _ vend.Vendor = (*Vendor)(nil)

// New loads the file once.
func New(o Options, now func() time.Time, log *zap.Logger) (*Vendor, error) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	v := &Vendor{opt: o, now: now, log: log}
	if err := v.Reload(); err != nil {
		return nil, err
	}
	log.Warn("static backend: these keys are long-lived and cannot be scoped by a session policy; every task gets the key's full permissions",
		zap.String("file", o.File), zap.Int("keys", len(*v.keys.Load())))
	return v, nil
}

// Reload re-reads the file; on error the old keys stay in place.
func (v *Vendor) Reload() error {
	b, err := os.ReadFile(v.opt.File)
	if err != nil {
		return fmt.Errorf("read static credentials: %w", err)
	}
	var f File
	if strings.EqualFold(filepath.Ext(v.opt.File), ".json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&f)
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		err = dec.Decode(&f)
	}
	if err != nil {
		return fmt.Errorf("parse %s: %w", v.opt.File, err)
	}
	var keys []key
	for i, e := range f.Credentials {
		sk, err := pick(e.SecretAccessKey, e.SecretAccessKeyEnv)
		if err != nil {
			return fmt.Errorf("credentials[%d]: secret_access_key: %w", i, err)
		}
		if sk == "" {
			return fmt.Errorf("credentials[%d]: set secret_access_key or secret_access_key_env", i)
		}
		st, err := pick(e.SessionToken, e.SessionTokenEnv)
		if err != nil {
			return fmt.Errorf("credentials[%d]: %w", i, err)
		}
		if e.AccessKeyID == "" {
			return fmt.Errorf("credentials[%d]: access_key_id is required", i)
		}
		keys = append(keys, key{org: e.Org, bucket: e.Bucket, creds: vend.Credentials{
			AccessKeyID: e.AccessKeyID, SecretAccessKey: secret.Secret(sk), SessionToken: secret.Secret(st),
			AccountID: e.AccountID, PackedPolicySize: -1, Source: "static",
		}})
	}
	if len(keys) == 0 {
		return fmt.Errorf("%s lists no credentials", v.opt.File)
	}
	v.keys.Store(&keys)
	return nil
}

func pick(val, env string) (string, error) {
	if val != "" && env != "" {
		return "", fmt.Errorf("set a value or an environment variable, not both")
	}
	if env != "" {
		s := os.Getenv(env)
		if s == "" {
			return "", fmt.Errorf("environment variable %s is empty", env)
		}
		return s, nil
	}
	return val, nil
}

// Vend picks the most specific entry: org and bucket, then org, then
// bucket, then an entry with neither.
func (v *Vendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	keys := *v.keys.Load()
	best, bestScore := -1, -1
	for i, k := range keys {
		if (k.org != "" && k.org != g.Org) || (k.bucket != "" && k.bucket != g.Bucket) {
			continue
		}
		score := 0
		if k.org != "" {
			score += 2
		}
		if k.bucket != "" {
			score++
		}
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return vend.Credentials{}, fault.New(fault.AccessDenied, "no_static_key", "no static credentials are configured for org %s and bucket %s", g.Org, g.Bucket)
	}
	c := keys[best].creds
	c.Expiration = v.now().Add(v.opt.Expiration.D()).UTC().Truncate(time.Second)
	return c, nil
}
