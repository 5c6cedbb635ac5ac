package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/testenv"
)

// TestRevocationReachesEveryReplica runs two in-process servers on one
// PostgreSQL: a revocation added through one is enforced by the other
// within the 5-second promise (poll_interval 200ms here).
func TestRevocationReachesEveryReplica(t *testing.T) {
	dsn := testenv.PostgresSchema(t, "dispenser_replica_")
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "checkpoint.key")
	if _, err := audit.GenerateKey(key, "dispenser-audit"); err != nil {
		t.Fatal(err)
	}
	// Each replica appends to its own log of the shared trail.
	auditYAML := func(log string) string {
		return "audit:\n  type: postgres\n  dsn: " + dsn + "\n  log: " + log +
			"\n  anchor_dir: " + filepath.Join(keyDir, "anchors") + "\n  checkpoint:\n    signing_key_file: " + key +
			"\nrevocation:\n  poll_interval: 200ms\n"
	}
	_, srvA := startOpsApp(t, opsTestConfig(t, t.TempDir(), auditYAML("replica-a"), ""))
	_, srvB := startOpsApp(t, opsTestConfig(t, t.TempDir(), auditYAML("replica-b"), ""))
	tok := token(t, "worker-1", "acme")
	creds := "/credentials?operation=get&location=s3://media/acme/in/&job_id=job-42"
	if code, _ := opsCall(t, srvB, "GET", creds, tok, ""); code != 200 {
		t.Fatalf("replica B before revocation: %d", code)
	}
	code, body := opsCall(t, srvA, "POST", "/v1/revocations", adminToken, `{"kind":"job","value":"job-42","reason":"runaway job"}`)
	if code != 201 {
		t.Fatalf("revoke on A: %d %s", code, body)
	}
	var rev struct{ ID string }
	if err := json.Unmarshal([]byte(body), &rev); err != nil {
		t.Fatal(err)
	}
	if code, _ := opsCall(t, srvA, "GET", creds, tok, ""); code != 403 {
		t.Fatalf("replica A right after its own revocation: %d, want 403", code)
	}
	waitStatus := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, _ := opsCall(t, srvB, "GET", creds, tok, "")
			if code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica B still answers %d after 5s, want %d", code, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus(403)
	// Both replicas list it; deleting on B lifts it on A.
	if code, body := opsCall(t, srvB, "GET", "/v1/revocations", adminToken, ""); code != 200 || !json.Valid([]byte(body)) || !strings.Contains(body, rev.ID) {
		t.Fatalf("list on B: %d %s", code, body)
	}
	if code, _ := opsCall(t, srvB, "DELETE", "/v1/revocations/"+rev.ID, adminToken, ""); code != 204 {
		t.Fatalf("delete on B: %d", code)
	}
	srvB, srvA = srvA, srvB
	waitStatus(200)

	// The add is in replica A's log, the delete in B's; both are found
	// through either replica.
	for _, q := range []struct{ outcome, log string }{{"revoked", "replica-a"}, {"unrevoked", "replica-b"}} {
		code, body := opsCall(t, srvA, "GET", "/v1/audit?outcome="+q.outcome, adminToken, "")
		var p audit.Page
		if code != 200 || json.Unmarshal([]byte(body), &p) != nil || len(p.Records) != 1 ||
			!strings.HasPrefix(p.Records[0].ID, q.log+":") || p.Records[0].JobID != "job-42" {
			t.Fatalf("%s records: %d %s", q.outcome, code, body)
		}
	}
}

func writeCert(t *testing.T, dir string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dispenser.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, DNSNames: []string{"dispenser.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	return certFile, keyFile
}

func TestTLSCertificateExpiryAndReload(t *testing.T) {
	dir := t.TempDir()
	first := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	certFile, keyFile := writeCert(t, dir, first)
	path := opsTestConfig(t, dir, "", "")
	cfg := readFile(t, path)
	cfg = replaceOnce(t, cfg, "  min_remaining: 20m\n", "  min_remaining: 20m\n  tls:\n    cert_file: "+certFile+"\n    key_file: "+keyFile+"\n")
	writeFile(t, path, cfg)
	a, _ := startOpsApp(t, path)
	if got := value(scrape(t, a), "dispenser_tls_cert_expiry_timestamp_seconds", nil); got != float64(first.Unix()) {
		t.Fatalf("expiry gauge = %v, want %v", got, first.Unix())
	}
	second := first.Add(60 * 24 * time.Hour)
	writeCert(t, dir, second)
	if err := a.reload(); err != nil {
		t.Fatal(err)
	}
	if got := value(scrape(t, a), "dispenser_tls_cert_expiry_timestamp_seconds", nil); got != float64(second.Unix()) {
		t.Fatalf("after reload expiry gauge = %v, want %v", got, second.Unix())
	}
	leaf, _ := a.certs.get(nil)
	if leaf.Leaf == nil || !leaf.Leaf.NotAfter.Equal(second) {
		t.Fatal("reload did not install the new certificate")
	}
	// A broken key file is rejected; the second certificate keeps serving.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.reload(); err == nil {
		t.Fatal("reload with a broken key accepted")
	}
	if leaf, _ := a.certs.get(nil); !leaf.Leaf.NotAfter.Equal(second) {
		t.Fatal("a rejected reload replaced the certificate")
	}
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q not found", old)
	}
	return strings.Replace(s, old, new, 1)
}

// TestWatchPicksUpRenewedCertificate: with watch_config, a certificate
// renewed in its own directory (as cert-manager does, apart from the
// configuration) is installed without a signal.
func TestWatchPicksUpRenewedCertificate(t *testing.T) {
	cfgDir, certDir := t.TempDir(), t.TempDir()
	first := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	certFile, keyFile := writeCert(t, certDir, first)
	path := opsTestConfig(t, cfgDir, "", "")
	cfg := replaceOnce(t, readFile(t, path), "  min_remaining: 20m\n",
		"  min_remaining: 20m\n  watch_config: true\n  tls:\n    cert_file: "+certFile+"\n    key_file: "+keyFile+"\n")
	writeFile(t, path, cfg)
	a, _ := startOpsApp(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.watchConfig(ctx, path); err != nil {
		t.Fatal(err)
	}
	second := first.Add(60 * 24 * time.Hour)
	writeCert(t, certDir, second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if leaf, _ := a.certs.get(nil); leaf.Leaf != nil && leaf.Leaf.NotAfter.Equal(second) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not picked up by the watch")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWatchFollowsAMovedCertificate: a reload that points the certificate
// at another directory moves the watch there, so later renewals in the new
// place are picked up too.
func TestWatchFollowsAMovedCertificate(t *testing.T) {
	cfgDir, oldDir, newDir := t.TempDir(), t.TempDir(), t.TempDir()
	first := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	certFile, keyFile := writeCert(t, oldDir, first)
	path := opsTestConfig(t, cfgDir, "", "")
	base := readFile(t, path)
	tlsAt := func(cert, key string) string {
		return replaceOnce(t, base, "  min_remaining: 20m\n",
			"  min_remaining: 20m\n  watch_config: true\n  tls:\n    cert_file: "+cert+"\n    key_file: "+key+"\n")
	}
	writeFile(t, path, tlsAt(certFile, keyFile))
	a, _ := startOpsApp(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.watchConfig(ctx, path); err != nil {
		t.Fatal(err)
	}
	waitLeaf := func(what string, want time.Time) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if leaf, _ := a.certs.get(nil); leaf.Leaf != nil && leaf.Leaf.NotAfter.Equal(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the certificate expiring %v was not installed", what, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Move: the configuration now names a certificate in another directory
	// (the watched configuration file changes, so the watch reloads).
	second := first.Add(30 * 24 * time.Hour)
	newCert, newKey := writeCert(t, newDir, second)
	writeFile(t, path, tlsAt(newCert, newKey))
	waitLeaf("after the move", second)
	// Renew in the new directory: only a watch that followed sees it.
	third := second.Add(30 * 24 * time.Hour)
	writeCert(t, newDir, third)
	waitLeaf("after a renewal in the new directory", third)
}
