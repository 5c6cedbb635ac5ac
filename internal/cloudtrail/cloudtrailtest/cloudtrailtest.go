// Package cloudtrailtest builds CloudTrail S3 data event records the way
// AWS documents and delivers them (CloudTrail record contents, the
// userIdentity element, the S3 CloudTrail log file examples), for tests.
package cloudtrailtest

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Session is an AssumedRole identity: temporary credentials from
// sts:AssumeRole on RoleARN (arn:aws:iam::ACCOUNT:role/PATH/NAME).
type Session struct {
	AccessKeyID    string
	RoleARN        string
	SessionName    string
	SourceIdentity string // "" when the session has none
	// RoleID is the role's unique id (AROA...); a fixed one when empty.
	RoleID string
	// Created is the session's creation time (default: an hour before the event).
	Created time.Time
}

// Event is one S3 call.
type Event struct {
	Time   time.Time
	Name   string // GetObject, PutObject, ListObjects, ...
	Bucket string
	Key    string
	// Prefix is the ListObjects prefix; nil for a request without one.
	Prefix *string
	// ListV2 marks a ListObjectsV2 call (CloudTrail logs it as ListObjects
	// with list-type 2).
	ListV2     bool
	VersionID  string
	CopySource string // CopyObject / UploadPartCopy: "bucket/key"
	// ErrorCode is "" for success, else e.g. AccessDenied.
	ErrorCode string
	BytesIn   int64
	BytesOut  int64
	SourceIP  string
	Region    string // default us-east-1
	Session   Session
	// Identity replaces the AssumedRole identity built from Session (an
	// IAMUser, an AWSService, an anonymous AWSAccount ...); nil keeps it.
	Identity map[string]any
	// NoIdentity leaves userIdentity out (a malformed record).
	NoIdentity bool
	// AccessPoint is the ARN of the access point the request went through
	// (arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME); CloudTrail names it in
	// resources and the request's Host is the access point's.
	AccessPoint string
}

// Ptr returns a pointer to s (for Event.Prefix).
func Ptr(s string) *string { return &s }

func id(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// accountOf returns the account of an ARN (its fifth field).
func accountOf(arn string) string {
	if p := strings.Split(arn, ":"); len(p) > 4 {
		return p[4]
	}
	return ""
}

// UserIdentity is the AssumedRole userIdentity element of s, as in the
// CloudTrail userIdentity reference ("userIdentity with temporary security
// credentials") and its AWS STS source identity section.
func (s Session) UserIdentity() map[string]any {
	account := accountOf(s.RoleARN)
	roleName := s.RoleARN[strings.LastIndexByte(s.RoleARN, '/')+1:]
	roleID := s.RoleID
	if roleID == "" {
		roleID = "AROAIDPPEZS35WEXAMPLE"
	}
	created := s.Created
	if created.IsZero() {
		created = time.Now().Add(-time.Hour)
	}
	ctx := map[string]any{
		"sessionIssuer": map[string]any{
			"type": "Role", "principalId": roleID, "arn": s.RoleARN, "accountId": account, "userName": roleName,
		},
		"webIdFederationData": map[string]any{},
		"attributes":          map[string]any{"creationDate": created.UTC().Format(time.RFC3339), "mfaAuthenticated": "false"},
	}
	if s.SourceIdentity != "" {
		ctx["sourceIdentity"] = s.SourceIdentity
	}
	return map[string]any{
		"type":           "AssumedRole",
		"principalId":    roleID + ":" + s.SessionName,
		"arn":            "arn:aws:sts::" + account + ":assumed-role/" + roleName + "/" + s.SessionName,
		"accountId":      account,
		"accessKeyId":    s.AccessKeyID,
		"sessionContext": ctx,
	}
}

// readOnly lists the event names CloudTrail marks readOnly.
var readOnly = map[string]bool{"GetObject": true, "HeadObject": true, "ListObjects": true, "ListObjectsV2": true,
	"ListParts": true, "GetBucketLocation": true, "GetObjectTagging": true, "GetObjectAcl": true, "HeadBucket": true}

// Record returns the CloudTrail record of e as AWS documents an S3 data
// event: eventSource s3.amazonaws.com, requestParameters with bucketName,
// Host and key (or list-type/prefix/delimiter for ListObjects),
// additionalEventData with the transfer sizes, resources naming the object
// and bucket ARNs.
func (e Event) Record() map[string]any {
	region := e.Region
	if region == "" {
		region = "us-east-1"
	}
	ip := e.SourceIP
	if ip == "" {
		ip = "192.0.2.10"
	}
	account := accountOf(e.Session.RoleARN)
	if account == "" {
		account = "111122223333"
	}
	host := e.Bucket + ".s3." + region + ".amazonaws.com"
	if e.AccessPoint != "" {
		host = e.AccessPoint[strings.LastIndexByte(e.AccessPoint, '/')+1:] + "-" + accountOf(e.AccessPoint) + ".s3-accesspoint." + region + ".amazonaws.com"
	}
	bucketARN := "arn:aws:s3:::" + e.Bucket
	params, resources := e.requestParameters(host, bucketARN)
	resources = append(resources, map[string]any{"accountId": account, "type": "AWS::S3::Bucket", "ARN": bucketARN})
	if e.AccessPoint != "" {
		resources = append(resources, map[string]any{"accountId": accountOf(e.AccessPoint), "type": "AWS::S3::AccessPoint", "ARN": e.AccessPoint})
	}
	rec := map[string]any{
		"eventVersion":      "1.10",
		"eventTime":         e.Time.UTC().Format(time.RFC3339),
		"eventSource":       "s3.amazonaws.com",
		"eventName":         e.Name,
		"awsRegion":         region,
		"sourceIPAddress":   ip,
		"userAgent":         "[aws-sdk-go-v2/1.36.3 ua/2.1 os/linux lang/go#1.26 md/GOOS#linux md/GOARCH#amd64 api/s3#1.79.1 m/E,b]",
		"requestParameters": params,
		"responseElements":  nil,
		"additionalEventData": map[string]any{
			"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": e.BytesIn,
			"AuthenticationMethod": "AuthHeader", "x-amz-id-2": "q6xhNJYmhg/" + id(12), "bytesTransferredOut": e.BytesOut,
		},
		"requestID":          id(8),
		"eventID":            uuid(),
		"readOnly":           readOnly[e.Name],
		"resources":          resources,
		"eventType":          "AwsApiCall",
		"managementEvent":    false,
		"recipientAccountId": account,
		"eventCategory":      "Data",
		"tlsDetails":         map[string]any{"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": host},
	}
	if e.Name == "GetBucketLocation" {
		// GetBucketLocation is a management event.
		rec["managementEvent"], rec["eventCategory"] = true, "Management"
		delete(rec, "resources")
		rec["resources"] = []any{map[string]any{"accountId": account, "type": "AWS::S3::Bucket", "ARN": bucketARN}}
	}
	switch {
	case e.NoIdentity:
	case e.Identity != nil:
		rec["userIdentity"] = e.Identity
	default:
		rec["userIdentity"] = e.Session.UserIdentity()
	}
	if e.ErrorCode != "" {
		e.addError(rec, account, bucketARN)
	}
	return rec
}

// requestParameters are the event's requestParameters and the resources
// it names before its bucket.
func (e Event) requestParameters(host, bucketARN string) (map[string]any, []any) {
	params := map[string]any{"bucketName": e.Bucket, "Host": host}
	resources := []any{}
	switch e.Name {
	case "ListObjects", "ListObjectsV2":
		if e.ListV2 {
			params["list-type"] = "2"
			params["encoding-type"] = "url"
		}
		params["delimiter"] = "/"
		prefix := ""
		if e.Prefix != nil {
			params["prefix"] = *e.Prefix
			prefix = *e.Prefix
		}
		resources = append(resources, map[string]any{"type": "AWS::S3::Object", "ARNPrefix": bucketARN + "/" + prefix})
	case "GetBucketLocation", "HeadBucket", "ListMultipartUploads":
		if e.Name == "GetBucketLocation" {
			params["location"] = ""
		}
	default:
		params["key"] = e.Key
		resources = append(resources, map[string]any{"type": "AWS::S3::Object", "ARN": bucketARN + "/" + e.Key})
		switch e.Name {
		case "CreateMultipartUpload":
			params["uploads"] = ""
		case "UploadPart", "UploadPartCopy":
			params["partNumber"] = "1"
			params["uploadId"] = "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
		case "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts":
			params["uploadId"] = "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
		case "PutObjectTagging":
			params["tagging"] = ""
			params["Tagging"] = map[string]any{"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/", "TagSet": map[string]any{"Tag": map[string]any{"Key": "state", "Value": "done"}}}
		}
		if e.VersionID != "" {
			params["versionId"] = e.VersionID
		}
		if e.CopySource != "" {
			params["x-amz-copy-source"] = e.CopySource
		}
	}
	return params, resources
}

// addError makes rec the record of a refused call: its errorCode and
// errorMessage (for AccessDenied, the message naming the session and the
// action), nothing transferred.
func (e Event) addError(rec map[string]any, account, bucketARN string) {
	rec["errorCode"] = e.ErrorCode
	if e.ErrorCode == "AccessDenied" {
		action := map[string]string{"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
			"ListObjects": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket"}[e.Name]
		if action == "" {
			action = "s3:" + e.Name
		}
		res := bucketARN
		if e.Key != "" {
			res += "/" + e.Key
		}
		who := "arn:aws:sts::" + account + ":assumed-role/" + e.Session.RoleARN[strings.LastIndexByte(e.Session.RoleARN, '/')+1:] + "/" + e.Session.SessionName
		rec["errorMessage"] = fmt.Sprintf("User: %s is not authorized to perform: %s on resource: \"%s\" because no session policy allows the %s action", who, action, res, action)
	} else {
		rec["errorMessage"] = e.ErrorCode
	}
	ad := rec["additionalEventData"].(map[string]any)
	ad["bytesTransferredIn"], ad["bytesTransferredOut"] = 0, 0
}

// IAMUser is the userIdentity of an IAM user's long-term key.
func IAMUser(account, name, accessKeyID string) map[string]any {
	return map[string]any{"type": "IAMUser", "principalId": "AIDAJ45Q7YFFAREXAMPLE", "arn": "arn:aws:iam::" + account + ":user/" + name,
		"accountId": account, "accessKeyId": accessKeyID, "userName": name}
}

// Document is a delivered log file's content: {"Records": [...]}.
func Document(recs ...map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"Records": recs})
	if err != nil {
		panic(err)
	}
	return b
}

// NDJSON is one record per line, as CloudTrail Lake and Athena export.
func NDJSON(recs ...map[string]any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// Gzip compresses b.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// DeliveredPath is where CloudTrail puts a log file delivered at at:
// AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHmmZ_UNIQUE.json.gz
func DeliveredPath(account, region string, at time.Time) string {
	at = at.UTC()
	unique := id(8)[:16]
	return filepath.Join("AWSLogs", account, "CloudTrail", region, at.Format("2006"), at.Format("01"), at.Format("02"),
		fmt.Sprintf("%s_CloudTrail_%s_%sZ_%s.json.gz", account, region, at.Format("20060102T1504"), unique))
}

// Deliver writes recs as one gzipped log file under root in the delivered
// layout and returns its path.
func Deliver(root, account, region string, at time.Time, recs ...map[string]any) (string, error) {
	path := filepath.Join(root, DeliveredPath(account, region, at))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, Gzip(Document(recs...)), 0o600)
}
