package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/config"
)

// TestComposeConfigLoadsInItsMounts lays out the bind mounts of the compose
// stack's dispenser service as the container sees them and loads its
// configuration from there, from another working directory: the key files
// it names relative to itself are found.
func TestComposeConfigLoadsInItsMounts(t *testing.T) {
	compose := docs(t, "compose.yaml")[0]
	root := t.TempDir()
	var cfg string
	for _, v := range at(compose, "services", "dispenser", "volumes").([]any) {
		parts := strings.Split(v.(string), ":")
		src, dst := parts[0], parts[1]
		if !strings.HasPrefix(src, ".") {
			continue // a named volume: the container's own state
		}
		copyTree(t, src, filepath.Join(root, dst))
		if strings.HasSuffix(dst, ".yaml") {
			cfg = filepath.Join(root, dst)
		}
	}
	if cfg == "" {
		t.Fatal("no configuration mounted")
	}
	t.Setenv("DISPENSER_ADMIN_TOKEN", strings.Repeat("x", 40))
	t.Chdir(t.TempDir())
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Auth.JWT.Keys[0].PublicKeyFile, root) {
		t.Errorf("key resolved to %s", c.Auth.JWT.Keys[0].PublicKeyFile)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
