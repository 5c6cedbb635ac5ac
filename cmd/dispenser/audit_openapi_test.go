package main

import (
	"context"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	dispenser "github.com/vtk/dispenser"
)

// TestOpenAPIDocumentsAuditRoutes checks the spec is valid and documents
// every audit route the server serves.
func TestOpenAPIDocumentsAuditRoutes(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(dispenser.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	a, srv := startAuditApp(t, localConfig(t, t.TempDir()))
	srv.Close()
	defer a.close()
	n := 0
	for _, r := range a.server.Routes() {
		if !strings.HasPrefix(r[1], "/v1/audit") {
			continue
		}
		n++
		item := doc.Paths.Find(r[1])
		if item == nil || item.GetOperation(r[0]) == nil {
			t.Errorf("%s %s is served but not in openapi.yaml", r[0], r[1])
		}
	}
	if n != 3 {
		t.Fatalf("%d audit routes served, want 3", n)
	}
}
