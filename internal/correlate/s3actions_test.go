package correlate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/cloudtrail"
)

func TestCallOf(t *testing.T) {
	p := func(s string) *string { return &s }
	tests := []struct {
		name   string
		params *cloudtrail.RequestParameters
		want   string // requests, or the error
		object string
	}{
		{"GetObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "k/x"}, "s3:GetObject arn:aws:s3:::b/k/x", "s3://b/k/x"},
		{"GetObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "k", VersionID: "v1"}, "s3:GetObjectVersion arn:aws:s3:::b/k", "s3://b/k"},
		{"HeadObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "k"}, "s3:GetObject arn:aws:s3:::b/k", "s3://b/k"},
		{"GetObjectAttributes", &cloudtrail.RequestParameters{BucketName: "b", Key: "k"}, "s3:GetObject arn:aws:s3:::b/k; s3:GetObjectAttributes arn:aws:s3:::b/k", "s3://b/k"},
		{"ListObjects", &cloudtrail.RequestParameters{BucketName: "b", Prefix: p("in/")}, "s3:ListBucket arn:aws:s3:::b map[s3:prefix:in/]", "s3://b/in/"},
		{"ListObjects", &cloudtrail.RequestParameters{BucketName: "b"}, "s3:ListBucket arn:aws:s3:::b", "s3://b"},
		{"ListObjectsV2", &cloudtrail.RequestParameters{BucketName: "b", Prefix: p("")}, "s3:ListBucket arn:aws:s3:::b map[s3:prefix:]", "s3://b/"},
		{"HeadBucket", &cloudtrail.RequestParameters{BucketName: "b"}, "s3:ListBucket arn:aws:s3:::b", "s3://b"},
		{"CopyObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "dst", CopySource: "/src/a%20b.mp4?versionId=v2"},
			"s3:PutObject arn:aws:s3:::b/dst; s3:GetObjectVersion arn:aws:s3:::src/a b.mp4; s3:GetObjectVersion arn:aws:s3:::src/a%20b.mp4", "s3://b/dst"},
		// Whether the header was logged escaped or not, a literal "%2F" in a
		// key must not read as a '/' that puts the source inside a prefix:
		// both readings must be allowed.
		{"CopyObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "dst", CopySource: "src/acme%2Fin/secret"},
			"s3:PutObject arn:aws:s3:::b/dst; s3:GetObject arn:aws:s3:::src/acme/in/secret; s3:GetObject arn:aws:s3:::src/acme%2Fin/secret", "s3://b/dst"},
		{"CopyObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "dst", CopySource: "src/100%.txt"},
			"s3:PutObject arn:aws:s3:::b/dst; s3:GetObject arn:aws:s3:::src/100%.txt", "s3://b/dst"},
		{"CopyObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "dst"}, "error: CopyObject: no x-amz-copy-source", ""},
		{"CopyObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "dst", CopySource: "arn:aws:s3:us-east-1:1:accesspoint/ap/object/k"}, "error: CopyObject: copy sources named by access point ARN are not resolved", ""},
		{"CopyObject", &cloudtrail.RequestParameters{BucketName: "b", Key: "dst", CopySource: "justabucket"}, "error: CopyObject: x-amz-copy-source is not bucket/key", ""},
		{"GetObject", &cloudtrail.RequestParameters{BucketName: "b"}, "error: the GetObject event has no requestParameters.key", ""},
		{"GetObject", nil, "error: the GetObject event has no requestParameters.bucketName", ""},
		{"DeleteObjects", &cloudtrail.RequestParameters{BucketName: "b"}, "error: no IAM mapping is known for S3 event DeleteObjects", ""},
	}
	for _, tt := range tests {
		c, err := callOf(&cloudtrail.Record{EventName: tt.name, RequestParameters: tt.params})
		got := ""
		if err != nil {
			got = "error: " + strings.TrimPrefix(err.Error(), "unmapped: ")
		} else {
			var parts []string
			for _, r := range c.requests {
				parts = append(parts, r.String())
			}
			got = strings.Join(parts, "; ")
		}
		if got != tt.want || c.object != tt.object {
			t.Errorf("%s %+v: %q %q, want %q %q", tt.name, tt.params, got, c.object, tt.want, tt.object)
		}
	}
	// Every mapped name yields at least one request.
	for name, spec := range s3Actions {
		c, err := callOf(&cloudtrail.Record{EventName: name, RequestParameters: &cloudtrail.RequestParameters{BucketName: "b", Key: "k", CopySource: "s/k"}})
		if err != nil || len(c.requests) < len(spec.actions) {
			t.Errorf("%s: %v %v", name, c.requests, err)
		}
	}
	// Through an access point: IAM authorises the access point's ARN; an
	// access point endpoint without an access point ARN is not judged.
	apTests := []struct {
		name      string
		host      string
		resources []cloudtrail.Resource
		want      string
	}{
		{"GetObject", "media-ap-2.s3-accesspoint.us-east-1.amazonaws.com", []cloudtrail.Resource{{Type: "AWS::S3::AccessPoint", ARN: "arn:aws:s3:us-east-1:2:accesspoint/media-ap"}},
			"s3:GetObject arn:aws:s3:us-east-1:2:accesspoint/media-ap/object/k/x"},
		{"ListObjects", "", []cloudtrail.Resource{{Type: "AWS::S3::AccessPoint", ARN: "arn:aws:s3:us-east-1:2:accesspoint/media-ap"}},
			"s3:ListBucket arn:aws:s3:us-east-1:2:accesspoint/media-ap"},
		{"GetObject", "media-ap-2.s3-accesspoint.us-east-1.amazonaws.com", nil, "error: GetObject: the request went through the access point endpoint"},
		{"GetObject", "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com", nil, "error: GetObject: the request went through the access point endpoint"},
		{"GetObject", "", []cloudtrail.Resource{{Type: "AWS::S3::AccessPoint", ARN: "arn:aws:s3::2:accesspoint/mfzwi23gnjvgw.mrap"}}, "error: GetObject: the request went through access point"},
	}
	for _, tt := range apTests {
		c, err := callOf(&cloudtrail.Record{EventName: tt.name, Resources: tt.resources,
			RequestParameters: &cloudtrail.RequestParameters{BucketName: "b", Key: "k/x", Host: tt.host}})
		got := ""
		if err != nil {
			got = "error: " + strings.TrimPrefix(err.Error(), "unmapped: ")
		} else {
			got = c.requests[0].String()
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s via %s %v: %q, want %q", tt.name, tt.host, tt.resources, got, tt.want)
		}
	}
	if fmt.Sprint(refused("AccessDenied"), refused("NoSuchKey"), refused("")) != "true false false" {
		t.Error("refused")
	}
}
