package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// SignIAMRequest builds the value of the X-Dispenser-Iam-Request header for
// a caller holding AWS credentials: a GetCallerIdentity request to endpoint
// (for example https://sts.us-east-1.amazonaws.com/), signed for region
// with serverID in the signed X-Dispenser-Server-Id header. The dispenser
// forwards it to STS and never sees the caller's secret key.
//
// It is the method's reference client: the dispenser itself never calls
// it, the tests sign with it, and it shows what a worker's code sends (the
// package is internal, so a worker outside this module copies it).
func SignIAMRequest(ctx context.Context, creds aws.Credentials, endpoint, region, serverID string, now time.Time) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(GetCallerIdentityBody))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set(DefaultIAMServerIDHeader, serverID)
	sum := sha256.Sum256([]byte(GetCallerIdentityBody))
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "sts", region, now); err != nil {
		return "", fmt.Errorf("sign GetCallerIdentity: %w", err)
	}
	hdr := map[string][]string{}
	for k, v := range req.Header {
		hdr[k] = v
	}
	b, err := json.Marshal(IAMRequest{
		Method: req.Method, URL: endpoint, Headers: hdr,
		Body: base64.StdEncoding.EncodeToString([]byte(GetCallerIdentityBody)),
	})
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}
