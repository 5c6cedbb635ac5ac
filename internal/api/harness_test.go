package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/mock"
)

// fakeVendor is a vend.Vendor whose behaviour is a function field.
type fakeVendor struct {
	mu    sync.Mutex
	calls int
	fn    func(ctx context.Context, g scope.Grant) (vend.Credentials, error)
	// issued keeps every credential handed to the server, so tests can
	// look for its secrets in logs and records.
	issued []vend.Credentials
}

var _ vend.Vendor = (*fakeVendor)(nil)

func (f *fakeVendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	c, err := f.fn(ctx, g)
	if err == nil {
		f.mu.Lock()
		f.issued = append(f.issued, c)
		f.mu.Unlock()
	}
	return c, err
}

func (f *fakeVendor) callCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// fakeRecorder is a Recorder that captures records; err, when set, makes
// Record fail.
type fakeRecorder struct {
	mu      sync.Mutex
	records []audit.Record
	err     error
}

var _ Recorder = (*fakeRecorder)(nil)

func (f *fakeRecorder) Record(_ context.Context, rec audit.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = append(f.records, rec)
	return f.err
}

func (f *fakeRecorder) all() []audit.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]audit.Record(nil), f.records...)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) Sync() error    { return nil }
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// harness is a wired Server with fakes and a debug-level JSON log buffer.
type harness struct {
	t      testing.TB
	srv    *Server
	h      http.Handler
	vendor *fakeVendor
	rec    *fakeRecorder
	logs   *syncBuffer
	key    ed25519.PrivateKey
	now    time.Time
}

var testTenants = []scope.Tenant{{
	Org:         "acme",
	RoleARN:     "arn:aws:iam::111122223333:role/vtk-target",
	ExternalID:  "acme-vtk",
	MaxDuration: duration.Duration(time.Hour),
	Grants:      []scope.GrantRule{{Bucket: "media", Prefixes: []string{"acme/"}, Operations: []string{"get", "put", "check", "tag"}}},
}}

// newHarness builds a ready server; edit adjusts Options before New.
func newHarness(t testing.TB, edit func(*Options)) *harness {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(priv.Public())
	pub := filepath.Join(t.TempDir(), "jwt.pub.pem")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ac := auth.Config{JWT: &auth.JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser",
		Keys: []auth.JWTKey{{ID: "k1", PublicKeyFile: pub}}}}
	ac.ApplyDefaults()
	chain, err := ac.Build()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := scope.Compile(testTenants, map[string]bool{"default": true})
	if err != nil {
		t.Fatal(err)
	}
	hs := &harness{t: t, key: priv, now: time.Now(), rec: &fakeRecorder{}, logs: &syncBuffer{}}
	mv := &mock.Vendor{AccountID: "111122223333"}
	hs.vendor = &fakeVendor{fn: mv.Vend}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), hs.logs, zapcore.DebugLevel))
	opt := Options{
		Logger: log, Authenticator: chain, Rules: rules,
		Vendor: vend.Router{"default": hs.vendor}, Recorder: hs.rec,
		MinRemaining: 20 * time.Minute, MaxBodyBytes: 1024, ReplicaID: "test-1",
		OpenAPI: []byte("openapi: 3.0.3\n"),
	}
	if edit != nil {
		edit(&opt)
	}
	hs.srv = New(opt)
	hs.srv.SetReady(true)
	hs.h = hs.srv.Handler()
	return hs
}

// token mints a JWT for sub/org; extra claims override.
func (hs *harness) token(sub, org string, extra map[string]any) string {
	hs.t.Helper()
	c := jwt.MapClaims{"iss": "https://issuer.test", "aud": "dispenser", "sub": sub, "org": org,
		"iat": hs.now.Unix(), "exp": hs.now.Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(hs.key)
	if err != nil {
		hs.t.Fatal(err)
	}
	return s
}

// do serves one request; auth is the whole Authorization header value.
func (hs *harness) do(method, target, authz string, body string, hdr map[string]string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	hs.h.ServeHTTP(w, r)
	return w
}
