package audit_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
)

// witness is a minimal HTTP anchor service that refuses smaller trees.
func witness(t *testing.T) *httptest.Server {
	var mu sync.Mutex
	held := map[string]string{}
	size := func(note string) int {
		n, _ := strconv.Atoi(strings.SplitN(note, "\n", 3)[1])
		return n
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer w" {
			w.WriteHeader(401)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch r.Method {
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			if old, ok := held[r.URL.Path]; ok && size(old) > size(string(b)) {
				w.WriteHeader(http.StatusConflict)
				return
			}
			held[r.URL.Path] = string(b)
		case http.MethodGet:
			v, ok := held[r.URL.Path]
			if !ok {
				w.WriteHeader(404)
				return
			}
			_, _ = io.WriteString(w, v)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPAnchor(t *testing.T) {
	ctx := context.Background()
	srv := witness(t)
	a := &audit.HTTPAnchor{URL: srv.URL + "/cp/", Header: http.Header{"Authorization": {"Bearer w"}}}
	if b, err := a.Latest(ctx, "o/main"); err != nil || b != nil {
		t.Fatalf("Latest before any Put = %q, %v", b, err)
	}
	if err := a.Put(ctx, "o/main", 5, []byte("o/main\n5\nAAAA\n\n— sig\n")); err != nil {
		t.Fatal(err)
	}
	if b, err := a.Latest(ctx, "o/main"); err != nil || !strings.HasPrefix(string(b), "o/main\n5\n") {
		t.Fatalf("Latest = %q, %v", b, err)
	}
	if err := a.Put(ctx, "o/main", 4, []byte("o/main\n4\nAAAA\n\n— sig\n")); err == nil {
		t.Fatal("a refused checkpoint was reported as anchored")
	}
	bad := &audit.HTTPAnchor{URL: srv.URL}
	if err := bad.Put(ctx, "o/main", 6, []byte("x")); err == nil {
		t.Fatal("unauthorized Put succeeded")
	}
	if _, err := bad.Latest(ctx, "o/main"); err == nil {
		t.Fatal("unauthorized Latest succeeded")
	}
}
