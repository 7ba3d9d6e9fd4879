package cnirpc

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Magic starts every frame. Its first byte, 0x00, never starts an HTTP request line.
const Magic = "\x00SLP"

// MaxFrame bounds the JSON body of one frame.
const MaxFrame = 1 << 20

// IsFrameStart reports whether b, the first byte a client sent, starts a frame of this
// protocol (and not an HTTP request).
func IsFrameStart(b byte) bool { return b == Magic[0] }

// WriteFrame writes v as one frame.
func WriteFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(body) > MaxFrame {
		return fmt.Errorf("frame of %d bytes is larger than %d", len(body), MaxFrame)
	}
	buf := make([]byte, 0, 8+len(body))
	buf = append(buf, Magic...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
	buf = append(buf, body...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ErrMalformed is wrapped by every error about bytes that are not a valid frame.
var ErrMalformed = errors.New("malformed frame")

// ReadFrame reads one frame into v. The body must be exactly one JSON object of at most
// MaxFrame bytes; anything else (wrong magic, oversize length, invalid JSON, trailing data
// after the object) is an error wrapping ErrMalformed.
func ReadFrame(r io.Reader, v any) error {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: header cut short", ErrMalformed)
		}
		return fmt.Errorf("read frame: %w", err)
	}
	if string(hdr[:4]) != Magic {
		return fmt.Errorf("%w: starts with %q, want %q", ErrMalformed, hdr[:4], Magic)
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if n > MaxFrame {
		return fmt.Errorf("%w: length %d is larger than %d", ErrMalformed, n, MaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("%w: body cut short after %d bytes: %w", ErrMalformed, len(body), err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: invalid JSON: %w", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	return nil
}
