package cloudtrail

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Position locates a record: the file (or "-" for standard input) and its
// index in the file's Records array (from 0), or its line (from 1) in a
// file of one record per line.
type Position struct {
	Source string `json:"source"`
	// Index is the record's index in Records, or its line number.
	Index int `json:"index"`
	// Line is true when Index is a line number.
	Line bool `json:"line,omitempty"`
}

// String renders p for messages: "file: record 3" or "file: line 4".
func (p Position) String() string {
	if p.Index < 0 {
		return p.Source
	}
	if p.Line {
		return fmt.Sprintf("%s: line %d", p.Source, p.Index)
	}
	return fmt.Sprintf("%s: record %d", p.Source, p.Index)
}

// Problem is input the reader could not use: a missing or unreadable file,
// a truncated gzip stream, malformed JSON, a record without the fields
// every record has. Index is -1 for a problem with the whole file.
type Problem struct {
	Position
	Message string `json:"message"`
}

// String renders p as "file: record N: message".
func (p Problem) String() string { return p.Position.String() + ": " + p.Message }

// Visitor receives each record in input order. The *Record is reused for
// the next record: copy what must outlive the call. A non-nil error stops
// the reading and is returned by Scan.
type Visitor func(pos Position, rec *Record) error

// Reader reads CloudTrail inputs. OnProblem, when set, is told about every
// problem; the reading goes on after it.
type Reader struct {
	OnProblem func(Problem)
	// Stdin is read for the input "-".
	Stdin io.Reader
	// Files counts the files (and streams) read.
	Files int
	// MaxLine bounds one line of a file of one record per line, and one
	// record (or any other value) of a {"Records": [...]} document
	// (default 1 MiB; CloudTrail events are at most 256 KB).
	MaxLine int
	// MaxBytes, when positive, bounds the bytes of one stream after
	// decompression: beyond it ScanStream returns ErrTooLarge.
	MaxBytes int64
}

// ErrTooLarge is returned by ScanStream for a stream that decompresses to
// more than Reader.MaxBytes.
var ErrTooLarge = errors.New("cloudtrail: the decompressed input is larger than the limit")

// maxReader fails reads past max bytes and remembers it did.
type maxReader struct {
	r        io.Reader
	n, max   int64
	exceeded bool
}

func (m *maxReader) Read(p []byte) (int, error) {
	if m.n >= m.max {
		// One byte more than allowed tells a stream of exactly max bytes
		// from a larger one.
		var one [1]byte
		n, err := m.r.Read(one[:])
		if n > 0 {
			m.exceeded = true
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if rest := m.max - m.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	return n, err
}

func (rd *Reader) maxRecord() int {
	if rd.MaxLine <= 0 {
		return 1 << 20
	}
	return rd.MaxLine
}

// boundedReader fails a read past limit: the decoder of a document reads
// one value at a time, and limit is set before each value to its start
// plus the largest value allowed, so a huge record is a problem instead of
// a buffer as large as the input.
type boundedReader struct {
	r     io.Reader
	n     int64 // bytes read
	limit int64
	max   int
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n >= b.limit {
		return 0, fmt.Errorf("a record is longer than %d bytes", b.max)
	}
	if rest := b.limit - b.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

// ErrNoInput is returned by Scan for an empty list of inputs.
var ErrNoInput = errors.New("cloudtrail: no input given")

// Scan reads every input in order: a file, a directory (walked
// recursively in lexical order, reading .json, .json.gz, .jsonl, .ndjson
// and their .gz forms, skipping CloudTrail digest and Insights files), or
// "-" for Stdin. Gzip is recognised by its magic bytes, not the name.
func (rd *Reader) Scan(ctx context.Context, inputs []string, visit Visitor) error {
	if len(inputs) == 0 {
		return ErrNoInput
	}
	for _, in := range inputs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if in == "-" {
			if rd.Stdin == nil {
				rd.problem(Problem{Position{"-", -1, false}, "no standard input"})
				continue
			}
			if err := rd.ScanStream(ctx, "-", rd.Stdin, visit); err != nil {
				return err
			}
			continue
		}
		st, err := os.Stat(in)
		if err != nil {
			rd.problem(Problem{Position{in, -1, false}, pathError(err)})
			continue
		}
		if !st.IsDir() {
			if err := rd.scanFile(ctx, in, visit); err != nil {
				return err
			}
			continue
		}
		err = filepath.WalkDir(in, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				rd.problem(Problem{Position{path, -1, false}, pathError(err)})
				if d != nil && d.IsDir() && path != in {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if path != in && skippedDir(d.Name()) {
					return fs.SkipDir
				}
				return nil
			}
			if !logFile(d.Name()) {
				return nil
			}
			return rd.scanFile(ctx, path, visit)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// skippedDir names CloudTrail's sibling folders that hold no API events.
func skippedDir(name string) bool {
	return name == "CloudTrail-Digest" || name == "CloudTrail-Insight"
}

// logFile reports whether a file found in a directory is read.
func logFile(name string) bool {
	if strings.Contains(name, "_CloudTrail-Digest_") || strings.Contains(name, "_CloudTrail-Insight_") {
		return false
	}
	name = strings.TrimSuffix(name, ".gz")
	for _, ext := range []string{".json", ".jsonl", ".ndjson"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

func pathError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

func (rd *Reader) problem(p Problem) {
	if rd.OnProblem != nil {
		rd.OnProblem(p)
	}
}

func (rd *Reader) scanFile(ctx context.Context, path string, visit Visitor) error {
	f, err := os.Open(path)
	if err != nil {
		rd.problem(Problem{Position{path, -1, false}, pathError(err)})
		return nil
	}
	defer f.Close()
	return rd.ScanStream(ctx, path, f, visit)
}

// ScanStream reads one stream named name: a {"Records": [...]} document or
// one record per line, either possibly gzipped. Problems are reported and
// skipped; only ctx's error or the visitor's is returned.
func (rd *Reader) ScanStream(ctx context.Context, name string, r io.Reader, visit Visitor) error {
	rd.Files++
	br := bufio.NewReaderSize(r, 64<<10)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			rd.problem(Problem{Position{name, -1, false}, "gzip: " + err.Error()})
			return nil
		}
		defer zr.Close()
		src = zr
	}
	var lim *maxReader
	if rd.MaxBytes > 0 {
		lim = &maxReader{r: src, max: rd.MaxBytes}
		src = lim
	}
	err := rd.scanDecompressed(ctx, name, bufio.NewReaderSize(src, 64<<10), visit)
	if err == nil && lim != nil && lim.exceeded {
		return ErrTooLarge
	}
	return err
}

func (rd *Reader) scanDecompressed(ctx context.Context, name string, br *bufio.Reader, visit Visitor) error {
	doc, err := isDocument(br)
	if err != nil {
		rd.problem(Problem{Position{name, -1, false}, readError(err)})
		return nil
	}
	if doc {
		return rd.scanDocument(ctx, name, br, visit)
	}
	return rd.scanLines(ctx, name, br, visit)
}

// isDocument reports whether the stream is a {"Records": ...} document,
// by peeking at its first key (CloudTrail writes Records first). Anything
// else is read as one record per line. A read error here is reported only
// when nothing at all could be read; otherwise the decoder meets it again
// where it happens, with the record index.
func isDocument(br *bufio.Reader) (bool, error) {
	b, err := br.Peek(4096)
	if len(b) == 0 {
		if err == nil || errors.Is(err, io.EOF) {
			return false, errors.New("empty input")
		}
		return false, err
	}
	rest := bytes.TrimLeft(b, " \t\r\n\ufeff")
	if len(rest) == 0 || rest[0] != '{' {
		return false, nil
	}
	return bytes.HasPrefix(bytes.TrimLeft(rest[1:], " \t\r\n"), []byte(`"Records"`)), nil
}

func readError(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated: unexpected end of input"
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		return "corrupt gzip stream: " + err.Error()
	}
	return err.Error()
}

// scanDocument streams the Records array token by token, so one record at
// a time is in memory. A record of the wrong shape is reported and
// skipped; a syntax error or a truncated stream ends the file.
func (rd *Reader) scanDocument(ctx context.Context, name string, r io.Reader, visit Visitor) error {
	br := &boundedReader{r: r, max: rd.maxRecord()}
	dec := json.NewDecoder(br)
	// bound lets the next value (a token or a record) be at most max bytes.
	bound := func() { br.limit = dec.InputOffset() + int64(br.max) }
	more := func() bool { bound(); return dec.More() }
	fail := func(i int, err error) {
		msg := readError(err)
		if i >= 0 {
			msg = fmt.Sprintf("%s (the file's remaining records are skipped)", msg)
		}
		rd.problem(Problem{Position{name, i, false}, msg})
	}
	bound()
	if _, err := dec.Token(); err != nil { // '{'
		fail(-1, err)
		return nil
	}
	var rec Record
	for more() {
		key, err := dec.Token()
		if err != nil {
			fail(-1, err)
			return nil
		}
		bound()
		if key != "Records" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				fail(-1, err)
				return nil
			}
			continue
		}
		tok, err := dec.Token()
		if err != nil {
			fail(-1, err)
			return nil
		}
		if tok == nil {
			continue // "Records": null
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			rd.problem(Problem{Position{name, -1, false}, "Records is not an array"})
			return nil
		}
		for i := 0; more(); i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			bound()
			rec = Record{}
			err := dec.Decode(&rec)
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				// The decoder read the whole value: skip just this record.
				rd.problem(Problem{Position{name, i, false}, fmt.Sprintf("malformed record: %s has the wrong type", typeErrorField(te))})
				continue
			}
			if err != nil {
				fail(i, err)
				return nil
			}
			if err := rd.deliver(Position{name, i, false}, &rec, visit); err != nil {
				return err
			}
		}
		bound()
		if _, err := dec.Token(); err != nil { // ']'
			fail(-1, err)
			return nil
		}
	}
	bound()
	if _, err := dec.Token(); err != nil { // '}'
		fail(-1, err)
	}
	return nil
}

func typeErrorField(te *json.UnmarshalTypeError) string {
	if te.Field != "" {
		return te.Field
	}
	return "the record"
}

// scanLines reads one JSON record per line (CloudTrail Lake and Athena
// exports). A malformed line is reported and the next line is read.
func (rd *Reader) scanLines(ctx context.Context, name string, r io.Reader, visit Visitor) error {
	sc := bufio.NewScanner(r)
	max := rd.maxRecord()
	sc.Buffer(make([]byte, 0, 64<<10), max)
	var rec Record
	line := 0
	for sc.Scan() {
		line++
		if err := ctx.Err(); err != nil {
			return err
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		rec = Record{}
		if err := json.Unmarshal(b, &rec); err != nil {
			var te *json.UnmarshalTypeError
			msg := "not a JSON record: " + err.Error()
			if errors.As(err, &te) {
				msg = fmt.Sprintf("malformed record: %s has the wrong type", typeErrorField(te))
			}
			rd.problem(Problem{Position{name, line, true}, msg})
			continue
		}
		if err := rd.deliver(Position{name, line, true}, &rec, visit); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		msg := readError(err)
		if errors.Is(err, bufio.ErrTooLong) {
			msg = fmt.Sprintf("a line is longer than %d bytes", max)
		}
		rd.problem(Problem{Position{name, line + 1, true}, msg + " (the file's remaining lines are skipped)"})
	}
	return nil
}

func (rd *Reader) deliver(pos Position, rec *Record, visit Visitor) error {
	rec.unwrap()
	if err := rec.check(); err != nil {
		rd.problem(Problem{pos, "malformed record: " + err.Error()})
		return nil
	}
	return visit(pos, rec)
}
