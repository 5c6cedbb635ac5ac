package authtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
	"time"
)

// BotocoreQuery is botocore's SigV4Auth._canonical_query_string_url: when a
// request's URL carries its query (no params dict), botocore splits it on
// '&', partitions each piece at the first '=', sorts the (key, value) pairs
// and joins them back, with no percent-encoding at all. This is what boto3
// and the AWS CLI v1 sign for a URL such as
// ?operation=get&location=s3://media/acme/in/. Written from botocore's
// algorithm for tests; never shared with the code under test.
func BotocoreQuery(raw string) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var pairs []kv
	for _, piece := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(piece, "=")
		pairs = append(pairs, kv{k, v})
	}
	// Python sorts tuples: by key, then by value.
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

// BotocoreSign signs a body-less request to host+path?rawQuery the way
// botocore's SigV4Auth does with a URL it was given as is (headers host and
// x-amz-date, the empty payload's hash, the query from BotocoreQuery) and
// returns the Authorization and X-Amz-Date header values.
func BotocoreSign(method, host, path, rawQuery, accessKeyID, secretKey, region, service string, at time.Time) (authorization, amzDate string) {
	amzDate = at.UTC().Format("20060102T150405Z")
	date := amzDate[:8]
	canonical := strings.Join([]string{
		method, path, BotocoreQuery(rawQuery),
		"host:" + host + "\nx-amz-date:" + amzDate + "\n",
		"host;x-amz-date",
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	}, "\n")
	scope := date + "/" + region + "/" + service + "/aws4_request"
	return "AWS4-HMAC-SHA256 Credential=" + accessKeyID + "/" + scope + ", SignedHeaders=host;x-amz-date, Signature=" +
		hex.EncodeToString(SigV4(secretKey, date, region, service, amzDate, scope, canonical)), amzDate
}

// SigV4 is the signature of a canonical request, computed step by step as
// the specification writes it.
func SigV4(secretKey, date, region, service, amzDate, scope, canonical string) []byte {
	sum := sha256.Sum256([]byte(canonical))
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := mac([]byte("AWS4"+secretKey), date)
	k = mac(k, region)
	k = mac(k, service)
	k = mac(k, "aws4_request")
	return mac(k, sts)
}

func mac(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}
