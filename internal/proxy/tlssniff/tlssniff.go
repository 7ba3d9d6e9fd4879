// Package tlssniff reads the server name (SNI) and the offered application protocols (ALPN)
// from a TLS ClientHello that a client has sent but the proxy has not consumed: the caller
// peeks the bytes (bufio.Reader.Peek) and relays them unchanged afterwards.
//
// Only the first TLS record is parsed. A ClientHello larger than the bytes the caller can peek
// (bigger than its buffer, or split over several records) yields what was found before the end
// together with ErrTruncated.
package tlssniff

import (
	"errors"
	"fmt"
)

// RecordHeaderLen is the length of a TLS record header: type, version, length.
const RecordHeaderLen = 5

// ErrTruncated says that the ClientHello continues past the bytes given.
var ErrTruncated = errors.New("tls client hello: truncated")

// Hello is what the proxy records about a ClientHello.
type Hello struct {
	ServerName string   // SNI host name, "" when the client sent none
	ALPN       []string // offered protocols in the client's order; nil when no ALPN extension
}

// LooksLikeHello reports whether p starts like a TLS handshake record (content type 22,
// protocol version 3.x). Three bytes are enough.
func LooksLikeHello(p []byte) bool {
	return len(p) >= 3 && p[0] == 0x16 && p[1] == 0x03 && p[2] <= 0x04
}

// RecordLen returns the length of the first record (header included) that p starts with.
func RecordLen(p []byte) (int, error) {
	if len(p) < RecordHeaderLen {
		return 0, ErrTruncated
	}
	if !LooksLikeHello(p) {
		return 0, fmt.Errorf("tls client hello: record type %#x version %#x%02x is not a handshake", p[0], p[1], p[2])
	}
	n := int(p[3])<<8 | int(p[4])
	if n == 0 || n > 1<<14+2048 {
		return 0, fmt.Errorf("tls client hello: record length %d out of range", n)
	}
	return RecordHeaderLen + n, nil
}

// reader is a bounds-checked cursor over a byte slice; any read past the end sets short.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) bytes(n int) []byte {
	if r.short || n > len(r.b) {
		r.short = true
		r.b = nil
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) uint(n int) int {
	v := 0
	for _, c := range r.bytes(n) {
		v = v<<8 | int(c)
	}
	return v
}

// vector reads an n-byte length prefix and returns that many bytes as a new reader.
func (r *reader) vector(n int) *reader { return &reader{b: r.bytes(r.uint(n)), short: r.short} }

// Parse reads the ClientHello in p, which starts with the record header.
func Parse(p []byte) (Hello, error) {
	var h Hello
	recLen, err := RecordLen(p)
	if err != nil {
		return h, err
	}
	truncated := len(p) < recLen
	r := &reader{b: p[RecordHeaderLen:min(len(p), recLen)]}
	if t := r.uint(1); !r.short && t != 1 {
		return h, fmt.Errorf("tls client hello: handshake type %d is not ClientHello", t)
	}
	bodyLen := r.uint(3)
	if bodyLen > len(r.b) {
		truncated = true
	}
	r.bytes(2)  // legacy_version
	r.bytes(32) // random
	r.vector(1) // legacy_session_id
	r.vector(2) // cipher_suites
	r.vector(1) // legacy_compression_methods
	// The extensions are read as far as the bytes go, so that a ClientHello cut short by the
	// caller's buffer still yields the fields before the cut.
	extLen := r.uint(2)
	if extLen > len(r.b) && !r.short {
		if !truncated {
			return h, errors.New("tls client hello: extensions run past the end of the record")
		}
		extLen = len(r.b)
	}
	exts := &reader{b: r.bytes(extLen), short: r.short}
	for !exts.short && len(exts.b) > 0 {
		typ := exts.uint(2)
		body := exts.vector(2)
		if body.short {
			break
		}
		switch typ {
		case 0: // server_name
			list := body.vector(2)
			for !list.short && len(list.b) > 0 {
				kind := list.uint(1)
				name := list.vector(2)
				if name.short {
					return h, errors.New("tls client hello: malformed server_name extension")
				}
				if kind == 0 {
					h.ServerName = string(name.b)
					break
				}
			}
		case 16: // application_layer_protocol_negotiation
			list := body.vector(2)
			h.ALPN = []string{}
			for !list.short && len(list.b) > 0 {
				proto := list.vector(1)
				if proto.short || len(proto.b) == 0 {
					return h, errors.New("tls client hello: malformed ALPN extension")
				}
				h.ALPN = append(h.ALPN, string(proto.b))
			}
		}
	}
	if r.short || exts.short || truncated {
		if truncated {
			return h, ErrTruncated
		}
		return h, errors.New("tls client hello: malformed (a length runs past the end of the message)")
	}
	return h, nil
}
