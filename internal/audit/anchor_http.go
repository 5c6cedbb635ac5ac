package audit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTPAnchor sends every checkpoint to a service outside the dispenser's
// and the database's control (a witness, or a write-once object store
// behind a small gateway): PUT {URL}/{origin} with the signed note as body,
// and GET the same URL for the newest one (404: none). The service should
// refuse a smaller tree than it holds.
type HTTPAnchor struct {
	URL    string // base URL, e.g. https://witness.example/checkpoints
	Client *http.Client
	// Header is added to every request (for example Authorization).
	Header http.Header
}

var _ Anchor = (*HTTPAnchor)(nil)

func (h *HTTPAnchor) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (h *HTTPAnchor) do(ctx context.Context, method, origin string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(h.URL, "/")+"/"+url.PathEscape(origin), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range h.Header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	return h.client().Do(req)
}

// Put implements Anchor.
func (h *HTTPAnchor) Put(ctx context.Context, origin string, size int64, signed []byte) error {
	resp, err := h.do(ctx, http.MethodPut, origin, signed)
	if err != nil {
		return fmt.Errorf("anchor %s: %w", h.URL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("anchor %s: checkpoint %d refused with HTTP %s", h.URL, size, strconv.Itoa(resp.StatusCode))
	}
	return nil
}

// Latest implements Anchor.
func (h *HTTPAnchor) Latest(ctx context.Context, origin string) ([]byte, error) {
	resp, err := h.do(ctx, http.MethodGet, origin, nil)
	if err != nil {
		return nil, fmt.Errorf("anchor %s: %w", h.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("anchor %s: HTTP %d", h.URL, resp.StatusCode)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}
