package ststest_test

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/ststest"
)

func post(t *testing.T, s *ststest.Server, form url.Values, signed bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if signed {
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDX/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestActionsAreExtensibleAndUnknownOnesFail(t *testing.T) {
	s := ststest.New(t)
	s.Handle("GetCallerIdentity", func(w http.ResponseWriter, r *ststest.Request) {
		ststest.WriteXML(w, 200, struct {
			XMLName xml.Name `xml:"GetCallerIdentityResponse"`
			Xmlns   string   `xml:"xmlns,attr"`
			Account string   `xml:"GetCallerIdentityResult>Account"`
		}{Xmlns: ststest.Namespace, Account: "111111111111"})
	})
	code, body := post(t, s, url.Values{"Action": {"GetCallerIdentity"}, "Version": {"2011-06-15"}}, true)
	if code != 200 || !strings.Contains(body, "<Account>111111111111</Account>") {
		t.Fatalf("%d %s", code, body)
	}
	code, body = post(t, s, url.Values{"Action": {"Nope"}, "Version": {"2011-06-15"}}, true)
	if code != 400 || !strings.Contains(body, "<Code>InvalidAction</Code>") || !strings.Contains(body, `xmlns="`+ststest.Namespace+`"`) {
		t.Fatalf("%d %s", code, body)
	}
	code, body = post(t, s, url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"}}, false)
	if code != 403 || !strings.Contains(body, "MissingAuthenticationToken") {
		t.Fatalf("unsigned request accepted: %d %s", code, body)
	}
	if s.Count("GetCallerIdentity") != 1 || len(s.Requests()) != 3 {
		t.Fatalf("requests not recorded: %d", len(s.Requests()))
	}
}

func TestDecodeAssumeRoleLists(t *testing.T) {
	in := ststest.DecodeAssumeRole(url.Values{
		"RoleArn": {"arn:aws:iam::1:role/r"}, "DurationSeconds": {"900"},
		"Tags.member.1.Key": {"a"}, "Tags.member.1.Value": {"1"},
		"Tags.member.2.Key": {"b"}, "Tags.member.2.Value": {""},
		"TransitiveTagKeys.member.1": {"a"},
	})
	if in.DurationSeconds != 900 || len(in.Tags) != 2 || in.Tags[1] != (ststest.Tag{Key: "b"}) || len(in.TransitiveTagKeys) != 1 {
		t.Fatalf("%+v", in)
	}
}
