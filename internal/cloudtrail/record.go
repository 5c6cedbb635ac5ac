// Package cloudtrail reads AWS CloudTrail logs as CloudTrail delivers them
// to S3 (gzipped {"Records": [...]} documents under
// AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/) and as CloudTrail Lake or
// Athena export them (one record per line). It streams: one record is in
// memory at a time, whatever the size of the input.
package cloudtrail

import (
	"encoding/json"
	"errors"
	"reflect"
	"time"
)

// Record is one CloudTrail event, with the fields the dispenser reads.
// Every other field of the record is skipped.
type Record struct {
	EventVersion        string               `json:"eventVersion"`
	EventTime           string               `json:"eventTime"`
	EventSource         string               `json:"eventSource"`
	EventName           string               `json:"eventName"`
	AWSRegion           string               `json:"awsRegion"`
	SourceIPAddress     string               `json:"sourceIPAddress"`
	UserAgent           string               `json:"userAgent"`
	UserIdentity        *UserIdentity        `json:"userIdentity"`
	RequestParameters   *RequestParameters   `json:"requestParameters"`
	AdditionalEventData *AdditionalEventData `json:"additionalEventData"`
	ErrorCode           string               `json:"errorCode"`
	ErrorMessage        string               `json:"errorMessage"`
	RequestID           string               `json:"requestID"`
	EventID             string               `json:"eventID"`
	RecipientAccountID  string               `json:"recipientAccountId"`
	Resources           Resources            `json:"resources"`

	// Detail holds the record when it arrived wrapped in an EventBridge
	// envelope ("detail-type": "AWS API Call via CloudTrail").
	Detail *Record `json:"detail"`

	time time.Time
}

// UserIdentity is the caller of an event.
type UserIdentity struct {
	Type           string          `json:"type"`
	PrincipalID    string          `json:"principalId"`
	ARN            string          `json:"arn"`
	AccountID      string          `json:"accountId"`
	AccessKeyID    string          `json:"accessKeyId"`
	SessionContext *SessionContext `json:"sessionContext"`
}

// SessionContext describes the temporary credentials of a call.
type SessionContext struct {
	SessionIssuer  *SessionIssuer `json:"sessionIssuer"`
	SourceIdentity string         `json:"sourceIdentity"`
	Attributes     struct {
		CreationDate     string `json:"creationDate"`
		MFAAuthenticated string `json:"mfaAuthenticated"`
	} `json:"attributes"`
}

// SessionIssuer is the role (or user) whose session made the call; for
// AssumedRole its ARN is the role's, path included.
type SessionIssuer struct {
	Type        string `json:"type"`
	PrincipalID string `json:"principalId"`
	ARN         string `json:"arn"`
	AccountID   string `json:"accountId"`
	UserName    string `json:"userName"`
}

// Resource is one entry of a record's resources: for S3 data events the
// object (or its ARNPrefix for a listing), the bucket and, for a request
// through an access point, the access point (type AWS::S3::AccessPoint).
type Resource struct {
	Type      string `json:"type"`
	ARN       string `json:"ARN"`
	AccountID string `json:"accountId"`
}

// Resources are a record's resources.
type Resources []Resource

// UnmarshalJSON reads the array of objects CloudTrail writes (or, as
// Athena may store it, a JSON string of it). An array of ARN strings, as
// an EventBridge envelope around the record has, is no record's
// resources: it is dropped.
func (rs *Resources) UnmarshalJSON(b []byte) error {
	type plain Resources
	err := unmarshalMaybeString(b, (*plain)(rs), "resources")
	if err != nil {
		var arns []string
		if json.Unmarshal(b, &arns) == nil {
			*rs = nil
			return nil
		}
	}
	return err
}

// RequestParameters are the S3 request parameters the correlator reads.
type RequestParameters struct {
	BucketName string `json:"bucketName"`
	Key        string `json:"key"`
	// Prefix is nil when the request had none (not the same as "").
	Prefix     *string `json:"prefix"`
	VersionID  string  `json:"versionId"`
	CopySource string  `json:"x-amz-copy-source"`
	// Host is the endpoint the request was sent to (an access point's
	// ends in .s3-accesspoint.REGION.amazonaws.com).
	Host string `json:"Host"`
	// The headers of a write that also set the object's ACL or tags.
	ACL              string `json:"x-amz-acl"`
	GrantRead        string `json:"x-amz-grant-read"`
	GrantReadACP     string `json:"x-amz-grant-read-acp"`
	GrantWriteACP    string `json:"x-amz-grant-write-acp"`
	GrantFullControl string `json:"x-amz-grant-full-control"`
	Tagging          string `json:"x-amz-tagging"`
}

// SetsACL reports whether a write also set the object's ACL.
func (p *RequestParameters) SetsACL() bool {
	return p.ACL != "" || p.GrantRead != "" || p.GrantReadACP != "" || p.GrantWriteACP != "" || p.GrantFullControl != ""
}

// AdditionalEventData carries S3's transfer sizes.
type AdditionalEventData struct {
	BytesTransferredIn  float64 `json:"bytesTransferredIn"`
	BytesTransferredOut float64 `json:"bytesTransferredOut"`
}

// UnmarshalJSON accepts the object CloudTrail writes and the JSON string
// Athena's CloudTrail table holds in its requestparameters column.
func (p *RequestParameters) UnmarshalJSON(b []byte) error {
	type plain RequestParameters
	return unmarshalMaybeString(b, (*plain)(p), "requestParameters")
}

// UnmarshalJSON accepts an object or, as Athena stores it, a JSON string.
func (d *AdditionalEventData) UnmarshalJSON(b []byte) error {
	type plain AdditionalEventData
	return unmarshalMaybeString(b, (*plain)(d), "additionalEventData")
}

// unmarshalMaybeString decodes b into v, first unquoting it when it is a
// JSON string. A failure is a type error of field, so the reader skips
// just this record.
func unmarshalMaybeString(b []byte, v any, field string) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" || s == "null" {
			return nil
		}
		b = []byte(s)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &json.UnmarshalTypeError{Value: "malformed " + field, Type: reflect.TypeOf(v), Field: field}
	}
	return nil
}

// Time is the parsed eventTime (valid after the reader checked it).
func (r *Record) Time() time.Time { return r.time }

// check validates the fields every record has and parses eventTime.
func (r *Record) check() error {
	switch {
	case r.EventTime == "":
		return errors.New("no eventTime")
	case r.EventSource == "":
		return errors.New("no eventSource")
	case r.EventName == "":
		return errors.New("no eventName")
	}
	t, err := time.Parse(time.RFC3339Nano, r.EventTime)
	if err != nil {
		return errors.New("eventTime is not an RFC 3339 time")
	}
	r.time = t.UTC()
	return nil
}

// unwrap replaces an EventBridge envelope by the record it carries.
func (r *Record) unwrap() {
	if r.Detail != nil && r.EventName == "" {
		*r = *r.Detail
	}
	r.Detail = nil
}
