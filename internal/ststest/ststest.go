// Package ststest is a fake AWS STS endpoint for tests. It speaks the real
// STS Query/XML wire protocol (form-encoded POST, Version 2011-06-15,
// AssumeRoleResponse / ErrorResponse XML in the
// https://sts.amazonaws.com/doc/2011-06-15/ namespace), so tests can point
// the real aws-sdk-go-v2 STS client at it. It records every request for
// assertions, and its answers are programmable per call.
//
// Actions are dispatched through Handle, so other packages can add actions
// (for example GetCallerIdentity) without changing this one.
package ststest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Namespace is the XML namespace of every STS response.
const Namespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// APIVersion is the only Version the fake accepts.
const APIVersion = "2011-06-15"

// Request is one recorded HTTP request.
type Request struct {
	Action string
	Form   url.Values
	Header http.Header
	// N is the 1-based number of this request among requests of its action.
	N int

	ctx context.Context
}

// Context is the HTTP request's context (done when the client gives up).
func (r *Request) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}

// Tag is one session tag from a request.
type Tag struct{ Key, Value string }

// AssumeRoleInput is an AssumeRole request as decoded from the form body.
type AssumeRoleInput struct {
	RoleArn           string
	RoleSessionName   string
	Policy            string
	DurationSeconds   int // 0 when absent
	ExternalId        string
	SourceIdentity    string
	Tags              []Tag
	TransitiveTagKeys []string
	// AccessKeyID is the key id the request was signed with (from the
	// SigV4 Authorization header), so tests can see which credentials called.
	AccessKeyID string
	// N is the 1-based number of this AssumeRole call.
	N int
}

// Credentials are what a successful AssumeRole returns.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	Expiration                                 time.Time
	AssumedRoleArn, AssumedRoleID              string
	PackedPolicySize                           int // < 0 omits the element
	// SessionTokenUtilization is the percentage of STS's session token
	// size limit the token uses (nil omits the element); the SDK names it
	// the replacement of PackedPolicySize.
	SessionTokenUtilization *int
	SourceIdentity          string
}

// Fault is an STS error answer.
type Fault struct {
	Status  int
	Type    string // Sender or Receiver
	Code    string
	Message string
}

// Common STS errors, shaped as STS sends them.
var (
	Throttling              = Fault{Status: 400, Type: "Sender", Code: "Throttling", Message: "Rate exceeded"}
	AccessDenied            = Fault{Status: 403, Type: "Sender", Code: "AccessDenied", Message: "User: arn:aws:sts::111111111111:assumed-role/dispenser/i-1 is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::222222222222:role/target"}
	MalformedPolicyDocument = Fault{Status: 400, Type: "Sender", Code: "MalformedPolicyDocument", Message: "The policy is not in the valid JSON format."}
	PackedPolicyTooLarge    = Fault{Status: 400, Type: "Sender", Code: "PackedPolicyTooLarge", Message: "Packed size of the inline session policy and session tags combined exceeds 100%."}
	RegionDisabled          = Fault{Status: 403, Type: "Sender", Code: "RegionDisabledException", Message: "STS is not activated in this region for account:222222222222."}
	InternalFailure         = Fault{Status: 500, Type: "Receiver", Code: "InternalFailure", Message: "An internal error occurred."}
	ServiceUnavailable      = Fault{Status: 503, Type: "Receiver", Code: "ServiceUnavailable", Message: "Service is unavailable."}
)

// Answer is the programmable outcome of one AssumeRole call: credentials,
// or a Fault, optionally after a delay.
type Answer struct {
	Creds *Credentials // nil with Fault nil: the default credentials
	Fault *Fault
	Delay time.Duration
}

// ActionHandler answers one action; it writes the complete response.
type ActionHandler func(w http.ResponseWriter, r *Request)

// Server is the fake STS endpoint.
type Server struct {
	*httptest.Server

	// Now stamps default credential expirations (default time.Now).
	Now func() time.Time
	// AssumeRole decides each AssumeRole answer. Nil answers default
	// credentials valid for DurationSeconds (3600 when absent).
	AssumeRole func(in AssumeRoleInput) Answer
	// Latency is added before every answer (for throughput benchmarks).
	Latency time.Duration

	mu       sync.Mutex
	handlers map[string]ActionHandler
	requests []Request
	counts   map[string]int
	inputs   []AssumeRoleInput
}

// New starts a fake STS server; it is closed by t.Cleanup when t is given.
func New(cleanup interface{ Cleanup(func()) }) *Server {
	s := &Server{handlers: map[string]ActionHandler{}, counts: map[string]int{}}
	s.handlers["AssumeRole"] = s.assumeRole
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	if cleanup != nil {
		cleanup.Cleanup(s.Close)
	}
	return s
}

// Handle registers (or replaces) the handler of an action.
func (s *Server) Handle(action string, h ActionHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[action] = h
}

// Requests returns a copy of every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// AssumeRoleInputs returns every decoded AssumeRole request, in order.
func (s *Server) AssumeRoleInputs() []AssumeRoleInput {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AssumeRoleInput(nil), s.inputs...)
}

// Count returns how many requests of an action arrived.
func (s *Server) Count(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[action]
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		WriteFault(w, Fault{Status: 400, Type: "Sender", Code: "InvalidAction", Message: "STS accepts POST only."})
		return
	}
	if err := r.ParseForm(); err != nil {
		WriteFault(w, Fault{Status: 400, Type: "Sender", Code: "MalformedQueryString", Message: "bad form body"})
		return
	}
	action := r.PostForm.Get("Action")
	s.mu.Lock()
	s.counts[action]++
	req := Request{Action: action, Form: r.PostForm, Header: r.Header.Clone(), N: s.counts[action], ctx: r.Context()}
	s.requests = append(s.requests, req)
	h := s.handlers[action]
	s.mu.Unlock()
	if v := r.PostForm.Get("Version"); v != APIVersion {
		WriteFault(w, Fault{Status: 400, Type: "Sender", Code: "InvalidParameterValue", Message: "unsupported Version " + v})
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		WriteFault(w, Fault{Status: 403, Type: "Sender", Code: "MissingAuthenticationToken", Message: "Request is missing Authentication Token"})
		return
	}
	if h == nil {
		WriteFault(w, Fault{Status: 400, Type: "Sender", Code: "InvalidAction", Message: "Could not find operation " + action})
		return
	}
	if s.Latency > 0 {
		select {
		case <-time.After(s.Latency):
		case <-r.Context().Done():
			return
		}
	}
	h(w, &req)
}

// DecodeAssumeRole reads an AssumeRole form body the way STS does,
// including the Tags.member.N.Key/Value and TransitiveTagKeys.member.N lists.
func DecodeAssumeRole(f url.Values) AssumeRoleInput {
	in := AssumeRoleInput{
		RoleArn: f.Get("RoleArn"), RoleSessionName: f.Get("RoleSessionName"), Policy: f.Get("Policy"),
		ExternalId: f.Get("ExternalId"), SourceIdentity: f.Get("SourceIdentity"),
	}
	if d := f.Get("DurationSeconds"); d != "" {
		in.DurationSeconds, _ = strconv.Atoi(d)
	}
	for i := 1; ; i++ {
		k, ok := f[fmt.Sprintf("Tags.member.%d.Key", i)]
		if !ok {
			break
		}
		in.Tags = append(in.Tags, Tag{Key: k[0], Value: f.Get(fmt.Sprintf("Tags.member.%d.Value", i))})
	}
	for i := 1; ; i++ {
		k, ok := f[fmt.Sprintf("TransitiveTagKeys.member.%d", i)]
		if !ok {
			break
		}
		in.TransitiveTagKeys = append(in.TransitiveTagKeys, k[0])
	}
	return in
}

// signingKeyID extracts the access key id from a SigV4 Authorization header.
func signingKeyID(h http.Header) string {
	a := h.Get("Authorization")
	i := strings.Index(a, "Credential=")
	if i < 0 {
		return ""
	}
	rest := a[i+len("Credential="):]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		return rest[:j]
	}
	return ""
}

func (s *Server) assumeRole(w http.ResponseWriter, r *Request) {
	in := DecodeAssumeRole(r.Form)
	in.AccessKeyID = signingKeyID(r.Header)
	in.N = r.N
	s.mu.Lock()
	s.inputs = append(s.inputs, in)
	decide := s.AssumeRole
	s.mu.Unlock()
	if f, bad := checkTransitive(in); bad {
		WriteFault(w, f)
		return
	}
	var a Answer
	if decide != nil {
		a = decide(in)
	}
	if a.Delay > 0 {
		t := time.NewTimer(a.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if a.Fault != nil {
		WriteFault(w, *a.Fault)
		return
	}
	c := a.Creds
	if c == nil {
		c = s.DefaultCredentials(in)
	}
	WriteAssumeRole(w, *c)
}

// STS's answers to parameters it refuses, in its wire format: a
// constraint failure names the parameter ("at 'policy'"), other refusals
// name it in the sentence.
var (
	// PolicyOutsideCharset: the session policy holds a character STS does
	// not accept there (only tab, newline, CR and U+0020 to U+00FF).
	PolicyOutsideCharset = Fault{Status: 400, Type: "Sender", Code: "ValidationError",
		Message: "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must satisfy regular expression pattern: [\u0009\u000A\u000D\u0020-\u00FF]+"}
	// DurationAboveRoleMaximum: DurationSeconds above the role's
	// MaxSessionDuration.
	DurationAboveRoleMaximum = Fault{Status: 400, Type: "Sender", Code: "ValidationError",
		Message: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."}
	// SessionNameTooLong: a RoleSessionName over 64 characters.
	SessionNameTooLong = Fault{Status: 400, Type: "Sender", Code: "ValidationError",
		Message: "1 validation error detected: Value 'x' at 'roleSessionName' failed to satisfy constraint: Member must have length less than or equal to 64"}
)

// InvalidTransitiveTagKey is STS's answer to a TransitiveTagKeys entry that
// names no session tag of the request.
var InvalidTransitiveTagKey = Fault{Status: 400, Type: "Sender", Code: "InvalidParameterValue",
	Message: "The specified transitive tag key must be included in the requested tags."}

// checkTransitive applies STS's rule that every transitive tag key is one
// of the request's session tags (compared case-insensitively).
func checkTransitive(in AssumeRoleInput) (Fault, bool) {
	tags := map[string]bool{}
	for _, t := range in.Tags {
		tags[strings.ToLower(t.Key)] = true
	}
	for _, k := range in.TransitiveTagKeys {
		if !tags[strings.ToLower(k)] {
			return InvalidTransitiveTagKey, true
		}
	}
	return Fault{}, false
}

// DefaultCredentials mints random credentials for in, valid for its
// DurationSeconds (default 3600) from Now.
func (s *Server) DefaultCredentials(in AssumeRoleInput) *Credentials {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	d := in.DurationSeconds
	if d == 0 {
		d = 3600
	}
	account := "222222222222"
	if p := strings.Split(in.RoleArn, ":"); len(p) >= 5 && p[4] != "" {
		account = p[4]
	}
	role := in.RoleArn[strings.LastIndexByte(in.RoleArn, '/')+1:]
	size := min(100, (len(in.Policy)*100)/2048+len(in.Tags))
	return &Credentials{
		AccessKeyID:      "ASIA" + randString(16),
		SecretAccessKey:  randString(40),
		SessionToken:     "FQoGZXIvYXdzE" + randString(200),
		Expiration:       now().Add(time.Duration(d) * time.Second).UTC().Truncate(time.Second),
		AssumedRoleArn:   "arn:aws:sts::" + account + ":assumed-role/" + role + "/" + in.RoleSessionName,
		AssumedRoleID:    "AROA" + randString(17) + ":" + in.RoleSessionName,
		PackedPolicySize: size,
		// Both elements: the vendor must prefer the newer one.
		SessionTokenUtilization: &size,
		SourceIdentity:          in.SourceIdentity,
	}
}

func randString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	s := base64.RawURLEncoding.EncodeToString(b)
	s = strings.NewReplacer("-", "A", "_", "B").Replace(s)
	return strings.ToUpper(s[:n])
}

// The XML shapes below follow the STS API reference and the response
// snapshots shipped with aws-sdk-go-v2/service/sts.

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"AssumeRoleResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		SourceIdentity  string `xml:"SourceIdentity,omitempty"`
		AssumedRoleUser struct {
			Arn           string `xml:"Arn"`
			AssumedRoleId string `xml:"AssumedRoleId"`
		} `xml:"AssumedRoleUser"`
		Credentials struct {
			AccessKeyId     string `xml:"AccessKeyId"`
			SecretAccessKey string `xml:"SecretAccessKey"`
			SessionToken    string `xml:"SessionToken"`
			Expiration      string `xml:"Expiration"`
		} `xml:"Credentials"`
		PackedPolicySize        *int `xml:"PackedPolicySize,omitempty"`
		SessionTokenUtilization *int `xml:"SessionTokenUtilization,omitempty"`
	} `xml:"AssumeRoleResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

// WriteAssumeRole writes a 200 AssumeRoleResponse.
func WriteAssumeRole(w http.ResponseWriter, c Credentials) {
	var resp assumeRoleResponse
	resp.Xmlns = Namespace
	resp.Result.SourceIdentity = c.SourceIdentity
	resp.Result.AssumedRoleUser.Arn = c.AssumedRoleArn
	resp.Result.AssumedRoleUser.AssumedRoleId = c.AssumedRoleID
	resp.Result.Credentials.AccessKeyId = c.AccessKeyID
	resp.Result.Credentials.SecretAccessKey = c.SecretAccessKey
	resp.Result.Credentials.SessionToken = c.SessionToken
	resp.Result.Credentials.Expiration = c.Expiration.UTC().Format(time.RFC3339)
	if c.PackedPolicySize >= 0 {
		p := c.PackedPolicySize
		resp.Result.PackedPolicySize = &p
	}
	resp.Result.SessionTokenUtilization = c.SessionTokenUtilization
	resp.RequestID = newRequestID()
	WriteXML(w, http.StatusOK, resp)
}

type errorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

// WriteFault writes an STS ErrorResponse.
func WriteFault(w http.ResponseWriter, f Fault) {
	var resp errorResponse
	resp.Xmlns = Namespace
	resp.Error.Type, resp.Error.Code, resp.Error.Message = f.Type, f.Code, f.Message
	resp.RequestID = newRequestID()
	WriteXML(w, f.Status, resp)
}

// WriteXML writes v as an STS XML document with status.
func WriteXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("x-amzn-RequestId", newRequestID())
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(b)
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Sequence returns an AssumeRole decider that answers the i-th call with
// answers[i-1], and every later call with the last answer.
func Sequence(answers ...Answer) func(AssumeRoleInput) Answer {
	return func(in AssumeRoleInput) Answer {
		if len(answers) == 0 {
			return Answer{}
		}
		i := min(in.N, len(answers)) - 1
		return answers[i]
	}
}

// Fail returns an Answer carrying f.
func Fail(f Fault) Answer { return Answer{Fault: &f} }
