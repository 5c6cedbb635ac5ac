package scope

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Operation is a storage task kind the dispenser can scope credentials for.
type Operation string

// The operations of the video toolkit's storage tools.
const (
	OpGet   Operation = "get"   // storage:get — download
	OpPut   Operation = "put"   // storage:put — upload
	OpCheck Operation = "check" // storage:check — existence check
	OpTag   Operation = "tag"   // storage:tag_s3 — PutObjectTagging
)

// Operations lists every operation in a stable order.
var Operations = []Operation{OpGet, OpPut, OpCheck, OpTag}

// ParseOperation accepts the short names and the tool names
// (storage:get, storage:put, storage:check, storage:tag_s3).
func ParseOperation(s string) (Operation, error) {
	switch strings.TrimSpace(s) {
	case "get", "storage:get":
		return OpGet, nil
	case "put", "storage:put":
		return OpPut, nil
	case "check", "storage:check":
		return OpCheck, nil
	case "tag", "tag_s3", "storage:tag_s3":
		return OpTag, nil
	case "":
		return "", fmt.Errorf("operation is required (one of get, put, check, tag)")
	}
	return "", fmt.Errorf("unknown operation %q (one of get, put, check, tag or storage:get, storage:put, storage:check, storage:tag_s3)", truncate(s, 40))
}

// truncate shortens s to at most n bytes without splitting a UTF-8
// sequence, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// opIndex numbers the operations for compiled rule bitmasks.
func opIndex(op Operation) (uint, bool) {
	switch op {
	case OpGet:
		return 0, true
	case OpPut:
		return 1, true
	case OpCheck:
		return 2, true
	case OpTag:
		return 3, true
	}
	return 0, false
}
