// Package cloudtrail reads AWS CloudTrail logs as CloudTrail delivers them
// to S3 (gzipped {"Records": [...]} documents under
// AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/) and as CloudTrail Lake or
// Athena export them (one record per line). It streams: one record is in
// memory at a time, whatever the size of the input.
package cloudtrail

import (
	"errors"
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

// RequestParameters are the S3 request parameters the correlator reads.
type RequestParameters struct {
	BucketName string `json:"bucketName"`
	Key        string `json:"key"`
	// Prefix is nil when the request had none (not the same as "").
	Prefix     *string `json:"prefix"`
	VersionID  string  `json:"versionId"`
	CopySource string  `json:"x-amz-copy-source"`
}

// AdditionalEventData carries S3's transfer sizes.
type AdditionalEventData struct {
	BytesTransferredIn  float64 `json:"bytesTransferredIn"`
	BytesTransferredOut float64 `json:"bytesTransferredOut"`
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
