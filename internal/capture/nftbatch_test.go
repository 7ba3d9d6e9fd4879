package capture

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// nlErr is a netlink error message (an acknowledgement when code is 0) for sequence seq.
func nlErr(seq uint32, code int32) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4+unix.NLMSG_HDRLEN)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], unix.NLMSG_ERROR)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[16:20], uint32(code))
	return b
}

// nlMsg is a netlink message of another type.
func nlMsg(typ uint16, seq uint32, payload int) []byte {
	b := make([]byte, nlmsgAlign(unix.NLMSG_HDRLEN+payload))
	binary.NativeEndian.PutUint32(b[0:4], uint32(unix.NLMSG_HDRLEN+payload))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestBatchVerdict(t *testing.T) {
	const last = 7
	for _, tc := range []struct {
		name     string
		in       []byte
		done     bool
		errno    unix.Errno
		malforms bool
	}{
		{name: "ack of the last message", in: nlErr(last, 0), done: true},
		{name: "ack of an earlier message only", in: nlErr(3, 0)},
		{name: "other messages before the ack", in: cat(nlMsg(0x0a00, 2, 5), nlErr(last, 0)), done: true},
		{name: "error of a message", in: nlErr(4, -int32(unix.EEXIST)), errno: unix.EEXIST},
		{name: "error before the last ack", in: cat(nlErr(4, -int32(unix.ENOENT)), nlErr(last, 0)), errno: unix.ENOENT},
		{name: "commit error on the batch begin", in: nlErr(1, -int32(unix.EPERM)), errno: unix.EPERM},
		{name: "nothing", in: nil},
		{name: "shorter than a header", in: nlErr(last, 0)[:10:10]},
		{name: "length field too large", in: func() []byte { b := nlErr(last, 0); binary.NativeEndian.PutUint32(b, 100); return b }(), malforms: true},
		{name: "length field too small", in: func() []byte { b := nlErr(last, 0); binary.NativeEndian.PutUint32(b, 4); return b }(), malforms: true},
		{name: "truncated error message", in: func() []byte {
			b := nlErr(last, 0)[:unix.NLMSG_HDRLEN]
			binary.NativeEndian.PutUint32(b, unix.NLMSG_HDRLEN)
			return b
		}(), malforms: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, err := batchVerdict(tc.in, last)
			switch {
			case tc.errno != 0:
				if !errors.Is(err, tc.errno) {
					t.Fatalf("error %v, want %v", err, tc.errno)
				}
			case tc.malforms:
				if err == nil {
					t.Fatal("malformed input accepted")
				}
			case err != nil:
				t.Fatalf("unexpected error %v", err)
			}
			if done != tc.done {
				t.Fatalf("done %v, want %v", done, tc.done)
			}
		})
	}
}
