// Command benchbare is the baseline of scripts/bench.sh: a bare chi router
// answering GET /credentials with the JSON body the dispenser answers, and
// nothing else (no authentication, scope, vending, audit or logging). The
// ratio of the dispenser's throughput to this one's is how close the full
// issuance path comes to the HTTP ceiling on the same machine and run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-chi/chi/v5"
)

// credentials has the fields of the dispenser's container-provider answer,
// encoded per request as the dispenser does.
type credentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
	AccountID       string `json:"AccountId,omitempty"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	body := flag.String("body", "", "file holding one dispenser answer to serve (its values; default: mock-sized values)")
	flag.Parse()
	if err := run(*listen, *body); err != nil {
		fmt.Fprintln(os.Stderr, "benchbare:", err)
		os.Exit(1)
	}
}

func run(listen, bodyFile string) error {
	c := credentials{AccessKeyID: "ASIAMOCK000000000000", SecretAccessKey: "0000000000000000000000000000000000000000",
		Token: "mock-session-token", Expiration: time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z"), AccountID: "111122223333"}
	if bodyFile != "" {
		b, err := os.ReadFile(bodyFile)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("%s: %w", bodyFile, err)
		}
	}
	r := chi.NewRouter()
	r.Get("/credentials", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(c)
	})
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// The script reads the address from this line.
	fmt.Printf("benchbare listening on http://%s\n", ln.Addr())
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	return srv.Serve(ln)
}
