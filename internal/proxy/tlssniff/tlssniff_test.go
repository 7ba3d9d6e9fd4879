package tlssniff

import (
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"
)

// clientHello returns the first bytes a crypto/tls client sends with cfg.
func clientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, cfg).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	p := buf[:n]
	// net.Pipe hands over one Write at a time: the whole record.
	if l, err := RecordLen(p); err != nil || l != len(p) {
		t.Fatalf("record length %d (%v), read %d", l, err, len(p))
	}
	return p
}

func TestParse(t *testing.T) {
	full := clientHello(t, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}})
	tests := []struct {
		name    string
		p       []byte
		want    Hello
		wantErr error // nil, ErrTruncated, or errAny
	}{
		{"sni and alpn", full, Hello{ServerName: "api.example.com", ALPN: []string{"h2", "http/1.1"}}, nil},
		{"no alpn", clientHello(t, &tls.Config{ServerName: "db.internal"}), Hello{ServerName: "db.internal"}, nil},
		{"no sni (IP address)", clientHello(t, &tls.Config{ServerName: "10.0.0.1", InsecureSkipVerify: true, NextProtos: []string{"grpc-exp"}}),
			Hello{ALPN: []string{"grpc-exp"}}, nil},
		{"truncated in the extensions", full[:len(full)-40], Hello{}, ErrTruncated},
		{"only the header", full[:5], Hello{}, ErrTruncated},
		{"not a handshake", []byte("GET / HTTP/1.1\r\n"), Hello{}, errAny},
		{"zero-length record", []byte{0x16, 3, 1, 0, 0}, Hello{}, errAny},
		{"not a ClientHello", []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0}, Hello{}, errAny},
		{"lengths past the end", append([]byte{0x16, 3, 1, 0, 8, 1, 0, 0, 4}, 3, 3, 0xff, 0xff), Hello{}, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.p)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("error %v", err)
			case tt.wantErr == errAny && (err == nil || errors.Is(err, ErrTruncated)):
				t.Fatalf("error %v, want a malformed-input error", err)
			case tt.wantErr == ErrTruncated && !errors.Is(err, ErrTruncated):
				t.Fatalf("error %v, want ErrTruncated", err)
			}
			if tt.wantErr == nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	// What comes before the truncation is kept.
	if got, _ := Parse(full[:len(full)-1]); got.ServerName != "api.example.com" {
		t.Errorf("truncated hello lost the server name: %+v", got)
	}
}

var errAny = errors.New("any error")

func TestLooksLikeHello(t *testing.T) {
	for _, tt := range []struct {
		p    string
		want bool
	}{{"\x16\x03\x01", true}, {"\x16\x03\x03\x00", true}, {"\x16\x02\x00", false}, {"GET", false}, {"\x16\x03", false}} {
		if got := LooksLikeHello([]byte(tt.p)); got != tt.want {
			t.Errorf("LooksLikeHello(%q) = %v", tt.p, got)
		}
	}
}
