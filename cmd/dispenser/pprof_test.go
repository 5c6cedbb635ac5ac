package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
)

// TestAdminPprof: net/http/pprof is absent from the admin listener by
// default, present with admin.pprof: true (a CPU profile fits the
// listener's write timeout), never on the API listener, and a change of
// the setting is reported as needing a restart.
func TestAdminPprof(t *testing.T) {
	get := func(t *testing.T, url string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	serve := func(t *testing.T, a *app) (admin, api string) {
		t.Helper()
		as := httptest.NewUnstartedServer(nil)
		as.Config = a.adminServer()
		as.Start()
		t.Cleanup(as.Close)
		srv := httptest.NewServer(a.server.Handler())
		t.Cleanup(srv.Close)
		return as.URL, srv.URL
	}

	t.Run("off by default", func(t *testing.T) {
		a := testApp(t, testConfig(t, false))
		if a.current.Load().Admin.PProf {
			t.Fatal("admin.pprof defaults to true")
		}
		admin, _ := serve(t, a)
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline"} {
			if code, _ := get(t, admin+p); code != 404 {
				t.Errorf("%s: %d, want 404", p, code)
			}
		}
		if code, _ := get(t, admin+"/metrics"); code != 200 {
			t.Errorf("/metrics: %d", code)
		}
	})

	t.Run("on", func(t *testing.T) {
		path := testConfig(t, false)
		b, _ := os.ReadFile(path)
		must(t, os.WriteFile(path, append(b, []byte("admin:\n  pprof: true\n")...), 0o600))
		a := testApp(t, path)
		admin, api := serve(t, a)
		if code, body := get(t, admin+"/debug/pprof/"); code != 200 || !bytes.Contains(body, []byte("goroutine")) {
			t.Fatalf("/debug/pprof/: %d %.100s", code, body)
		}
		code, body := get(t, admin+"/debug/pprof/profile?seconds=1")
		if code != 200 || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
			t.Fatalf("CPU profile: %d %.100q, want a gzipped profile", code, body)
		}
		if code, _ := get(t, admin+"/readyz"); code != 200 {
			t.Fatalf("/readyz beside pprof: %d", code)
		}
		if code, _ := get(t, api+"/debug/pprof/"); code != 404 {
			t.Fatalf("API listener serves pprof: %d", code)
		}
		old := *a.current.Load()
		cur := old
		cur.Admin.PProf = false
		if got := restartOnly(&old, &cur); !slices.Contains(got, "admin.pprof") {
			t.Fatalf("restartOnly = %v, want admin.pprof", got)
		}
	})
}
