package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"
)

const raw = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

func TestSecretRedactsEverywhere(t *testing.T) {
	s := Secret(raw)
	type holder struct {
		Key Secret `json:"key" yaml:"key"`
	}
	h := holder{Key: s}
	var outs []string
	for _, f := range []string{"%s", "%v", "%+v", "%#v", "%q"} {
		outs = append(outs, fmt.Sprintf(f, s), fmt.Sprintf(f, h))
	}
	j, _ := json.Marshal(h)
	y, _ := yaml.Marshal(h)
	outs = append(outs, string(j), string(y))

	var zb bytes.Buffer
	zl := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&zb), zap.DebugLevel))
	zl.Info("x", zap.Any("secret", s), zap.Any("holder", h), zap.Stringer("str", s), zap.Reflect("refl", h))
	_ = zl.Sync()
	outs = append(outs, zb.String())

	var sb bytes.Buffer
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("x", "secret", s, "holder", h)
	outs = append(outs, sb.String())

	for i, o := range outs {
		if strings.Contains(o, "wJalrXUtnFEMI") {
			t.Errorf("output %d leaks the secret: %s", i, o)
		}
		if !strings.Contains(o, Redacted) {
			t.Errorf("output %d lacks the redaction marker: %s", i, o)
		}
	}
	if s.Reveal() != raw || s.Empty() || !Secret("").Empty() {
		t.Fatal("Reveal/Empty")
	}
}
