package correlate

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/scope/iampolicy"
)

// access is what an event did to the object, for the per-task summary.
type access uint8

const (
	accessOther access = iota
	accessRead
	accessWrite
)

// actionSpec is how IAM authorises one S3 API call.
type actionSpec struct {
	// actions are needed on the object (or the bucket when bucketLevel).
	actions []string
	// versioned replace actions when the request names a versionId.
	versioned []string
	// bucketLevel calls are authorised on arn:aws:s3:::BUCKET.
	bucketLevel bool
	// list calls carry the s3:prefix condition key (requestParameters.prefix;
	// absent when the request had no prefix).
	list bool
	// copySource calls also read x-amz-copy-source (s3:GetObject on it).
	copySource bool
	// writesObject calls can set the new object's ACL (x-amz-acl,
	// x-amz-grant-*: s3:PutObjectAcl too) and tags (x-amz-tagging:
	// s3:PutObjectTagging too).
	writesObject bool
	access       access
}

// s3Actions maps CloudTrail eventNames of s3.amazonaws.com to the IAM
// actions S3 checks for them (Amazon S3 API permissions reference). HEAD
// needs s3:GetObject; multipart uploads are covered by s3:PutObject
// except Abort and ListParts; ListObjectsV2 is logged as ListObjects with
// list-type 2. An eventName missing here is never judged: the event is
// reported as unverifiable.
var s3Actions = map[string]actionSpec{
	"GetObject":                {actions: []string{"s3:GetObject"}, versioned: []string{"s3:GetObjectVersion"}, access: accessRead},
	"HeadObject":               {actions: []string{"s3:GetObject"}, versioned: []string{"s3:GetObjectVersion"}},
	"SelectObjectContent":      {actions: []string{"s3:GetObject"}, access: accessRead},
	"GetObjectAttributes":      {actions: []string{"s3:GetObject", "s3:GetObjectAttributes"}, versioned: []string{"s3:GetObjectVersion", "s3:GetObjectVersionAttributes"}},
	"PutObject":                {actions: []string{"s3:PutObject"}, writesObject: true, access: accessWrite},
	"CreateMultipartUpload":    {actions: []string{"s3:PutObject"}, writesObject: true, access: accessWrite},
	"UploadPart":               {actions: []string{"s3:PutObject"}, access: accessWrite},
	"CompleteMultipartUpload":  {actions: []string{"s3:PutObject"}, access: accessWrite},
	"CopyObject":               {actions: []string{"s3:PutObject"}, copySource: true, writesObject: true, access: accessWrite},
	"UploadPartCopy":           {actions: []string{"s3:PutObject"}, copySource: true, access: accessWrite},
	"AbortMultipartUpload":     {actions: []string{"s3:AbortMultipartUpload"}},
	"ListParts":                {actions: []string{"s3:ListMultipartUploadParts"}},
	"ListMultipartUploadParts": {actions: []string{"s3:ListMultipartUploadParts"}},
	"PutObjectTagging":         {actions: []string{"s3:PutObjectTagging"}, versioned: []string{"s3:PutObjectVersionTagging"}},
	"GetObjectTagging":         {actions: []string{"s3:GetObjectTagging"}, versioned: []string{"s3:GetObjectVersionTagging"}},
	"DeleteObjectTagging":      {actions: []string{"s3:DeleteObjectTagging"}, versioned: []string{"s3:DeleteObjectVersionTagging"}},
	"DeleteObject":             {actions: []string{"s3:DeleteObject"}, versioned: []string{"s3:DeleteObjectVersion"}},
	"GetObjectAcl":             {actions: []string{"s3:GetObjectAcl"}, versioned: []string{"s3:GetObjectVersionAcl"}},
	"PutObjectAcl":             {actions: []string{"s3:PutObjectAcl"}, versioned: []string{"s3:PutObjectVersionAcl"}},
	"RestoreObject":            {actions: []string{"s3:RestoreObject"}},
	"GetObjectRetention":       {actions: []string{"s3:GetObjectRetention"}},
	"PutObjectRetention":       {actions: []string{"s3:PutObjectRetention"}},
	"GetObjectLegalHold":       {actions: []string{"s3:GetObjectLegalHold"}},
	"PutObjectLegalHold":       {actions: []string{"s3:PutObjectLegalHold"}},
	"ListObjects":              {actions: []string{"s3:ListBucket"}, bucketLevel: true, list: true},
	"ListObjectsV2":            {actions: []string{"s3:ListBucket"}, bucketLevel: true, list: true},
	"ListObjectVersions":       {actions: []string{"s3:ListBucketVersions"}, bucketLevel: true, list: true},
	"ListMultipartUploads":     {actions: []string{"s3:ListBucketMultipartUploads"}, bucketLevel: true},
	"GetBucketLocation":        {actions: []string{"s3:GetBucketLocation"}, bucketLevel: true},
	// HeadBucket needs s3:ListBucket; the request has no prefix.
	"HeadBucket": {actions: []string{"s3:ListBucket"}, bucketLevel: true},
}

// s3Call is an event as IAM authorised it.
type s3Call struct {
	requests []iampolicy.Request
	actions  []string
	object   string // s3://bucket/key, s3://bucket/prefix or s3://bucket
	source   string // the copy source object, s3://bucket/key
	// via is the access point the request went through ("" for none).
	via    string
	access access
}

// errUnmapped marks an event the correlator cannot map to IAM requests.
var errUnmapped = errors.New("unmapped")

// callOf maps an S3 event to the IAM requests that authorised it.
func callOf(rec *cloudtrail.Record) (s3Call, error) {
	spec, ok := s3Actions[rec.EventName]
	if !ok {
		return s3Call{}, fmt.Errorf("%w: no IAM mapping is known for S3 event %s", errUnmapped, rec.EventName)
	}
	p := rec.RequestParameters
	if p == nil || p.BucketName == "" {
		return s3Call{}, fmt.Errorf("%w: the %s event has no requestParameters.bucketName", errUnmapped, rec.EventName)
	}
	actions := spec.actions
	if p.VersionID != "" && spec.versioned != nil {
		actions = spec.versioned
	}
	if spec.writesObject {
		if p.SetsACL() {
			actions = append(append([]string(nil), actions...), "s3:PutObjectAcl")
		}
		if p.Tagging != "" {
			actions = append(append([]string(nil), actions...), "s3:PutObjectTagging")
		}
	}
	c := s3Call{actions: actions, access: spec.access}
	ap, err := accessPoint(rec)
	if err != nil {
		return s3Call{}, fmt.Errorf("%w: %s: %v", errUnmapped, rec.EventName, err)
	}
	// IAM authorises a request through an access point on the access
	// point's ARN (…:accesspoint/NAME, …/object/KEY), not the bucket's.
	bucketARN, objectARN := "arn:aws:s3:::"+p.BucketName, "arn:aws:s3:::"+p.BucketName+"/"
	if ap != "" {
		bucketARN, objectARN, c.via = ap, ap+"/object/", "access point "+ap
	}
	resource := bucketARN
	switch {
	case spec.bucketLevel:
		c.object = "s3://" + p.BucketName
		if spec.list && p.Prefix != nil {
			c.object += "/" + *p.Prefix
		}
	default:
		if p.Key == "" {
			return s3Call{}, fmt.Errorf("%w: the %s event has no requestParameters.key", errUnmapped, rec.EventName)
		}
		resource = objectARN + p.Key
		c.object = "s3://" + p.BucketName + "/" + p.Key
	}
	var ctx map[string]string
	if spec.list && p.Prefix != nil {
		ctx = map[string]string{"s3:prefix": *p.Prefix}
	}
	for _, a := range actions {
		c.requests = append(c.requests, iampolicy.Request{Action: a, Resource: resource, Context: ctx})
	}
	if spec.copySource {
		sources, version, err := parseCopySource(p.CopySource)
		if err != nil {
			return s3Call{}, fmt.Errorf("%w: %s: %v", errUnmapped, rec.EventName, err)
		}
		read := "s3:GetObject"
		if version != "" {
			read = "s3:GetObjectVersion"
		}
		for _, src := range sources {
			c.requests = append(c.requests, iampolicy.Request{Action: read, Resource: "arn:aws:s3:::" + src})
		}
		c.actions = append(append([]string(nil), c.actions...), read)
		c.source = "s3://" + sources[0]
	}
	return c, nil
}

// accessPoint returns the ARN of the access point a request went through
// (CloudTrail names it in resources as AWS::S3::AccessPoint), "" for a
// request to the bucket. A request sent to an access point endpoint
// (Host *.s3-accesspoint.*, a Multi-Region Access Point's *.mrap.*) that
// names no usable access point ARN cannot be judged.
func accessPoint(rec *cloudtrail.Record) (string, error) {
	for _, r := range rec.Resources {
		if r.Type != "AWS::S3::AccessPoint" {
			continue
		}
		parts := strings.SplitN(r.ARN, ":", 6)
		if len(parts) != 6 || parts[0] != "arn" || parts[2] != "s3" || parts[3] == "" || parts[4] == "" ||
			!strings.HasPrefix(parts[5], "accesspoint/") || strings.Count(parts[5], "/") != 1 {
			return "", fmt.Errorf("the request went through access point %q, which is not an access point ARN the correlator can evaluate", r.ARN)
		}
		return r.ARN, nil
	}
	if p := rec.RequestParameters; p != nil {
		host := strings.ToLower(p.Host)
		if strings.Contains(host, ".s3-accesspoint.") || strings.Contains(host, ".mrap.") || strings.Contains(host, ".s3-object-lambda.") {
			return "", fmt.Errorf("the request went through the access point endpoint %s, and the record names no access point ARN", p.Host)
		}
	}
	return "", nil
}

// parseCopySource reads x-amz-copy-source: "bucket/key", optionally with a
// leading '/', URL-encoded, and "?versionId=V". It returns the source as
// "bucket/key", unescaped first and then as written when unescaping changes
// it: whether CloudTrail logged the header escaped or not, a key with a
// literal "%2F" must not pass for one with a '/', so both readings must be
// allowed. Access point ARNs are not resolved.
func parseCopySource(s string) (sources []string, version string, err error) {
	if s == "" {
		return nil, "", errors.New("no x-amz-copy-source")
	}
	if strings.HasPrefix(s, "arn:") {
		return nil, "", errors.New("copy sources named by access point ARN are not resolved")
	}
	if i := strings.Index(s, "?versionId="); i >= 0 {
		s, version = s[:i], s[i+len("?versionId="):]
	}
	readings := []string{s}
	if u, uerr := url.PathUnescape(s); uerr == nil && u != s {
		readings = []string{u, s}
	}
	for _, r := range readings {
		bucket, key, ok := strings.Cut(strings.TrimPrefix(r, "/"), "/")
		if !ok || bucket == "" || key == "" {
			return nil, "", errors.New("x-amz-copy-source is not bucket/key")
		}
		sources = append(sources, bucket+"/"+key)
	}
	return sources, version, nil
}

// refused reports whether an errorCode means S3 refused the call before
// acting on it (authorization or authentication), so a request outside
// the grant that ended with it shows the policy held. Any other error
// (NoSuchKey, PreconditionFailed, InvalidRange...) comes after S3
// authorised the call.
func refused(errorCode string) bool {
	switch errorCode {
	case "AccessDenied", "AllAccessDisabled", "AccountProblem", "ExpiredToken", "InvalidAccessKeyId",
		"InvalidToken", "SignatureDoesNotMatch", "TokenRefreshRequired", "InvalidSecurity", "NoSuchBucket":
		return true
	}
	return false
}
