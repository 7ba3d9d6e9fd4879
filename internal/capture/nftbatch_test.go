package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
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

// libraryBatch builds with github.com/google/nftables the transaction buildApply builds
// (rs in a namespace where our tables of families present exist) and returns the messages
// its Flush sends, BATCH_BEGIN and BATCH_END included. The library is the reference for the
// messages' contents; its test dial hook is used here only, to see them.
func libraryBatch(t *testing.T, build func(c *nftables.Conn)) []netlink.Message {
	t.Helper()
	var sent []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req != nil && sent == nil {
			sent = req
		}
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 20)}}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	build(c)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return sent
}

func libraryApply(t *testing.T, rs rules.Ruleset, present []rules.Family) []netlink.Message {
	return libraryBatch(t, func(c *nftables.Conn) {
		for _, f := range allFamilies {
			t := &nftables.Table{Name: contract.NFTablesTableName, Family: tableFamily(f)}
			if slices.Contains(present, f) {
				c.AddTable(t)
				c.DelTable(t)
			}
			if !rs.Has(f) {
				continue
			}
			if slices.Contains(present, f) {
				c.AddTable(t)
			} else {
				c.CreateTable(t)
			}
			chains := map[string]*nftables.Chain{}
			for _, ch := range rs.NFT(f).Chains {
				nc := &nftables.Chain{Name: ch.Name, Table: t}
				if ch.Hook != "" {
					nc.Type = nftables.ChainType(ch.Type)
					nc.Hooknum = nftables.ChainHookPrerouting
					if ch.Hook == "output" {
						nc.Hooknum = nftables.ChainHookOutput
					}
					nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority))
					policy := nftables.ChainPolicyAccept
					if ch.Policy == "drop" {
						policy = nftables.ChainPolicyDrop
					}
					nc.Policy = &policy
				}
				chains[ch.Name] = c.AddChain(nc)
			}
			for _, ch := range rs.NFT(f).Chains {
				for _, r := range ch.Rules {
					exprs, err := encodeRule(f, r)
					if err != nil {
						panic(err)
					}
					c.AddRule(&nftables.Rule{Table: t, Chain: chains[ch.Name], Exprs: exprs,
						UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
				}
			}
		}
	})
}

// splitMessages splits a marshalled batch into its messages.
func splitMessages(t *testing.T, b []byte) []netlink.Message {
	t.Helper()
	var out []netlink.Message
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			t.Fatalf("%d bytes left after the last message", len(b))
		}
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) || l%unix.NLMSG_ALIGNTO != 0 {
			t.Fatalf("message length %d of %d bytes", l, len(b))
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:l]); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		b = b[l:]
	}
	return out
}

// TestBatchMatchesLibrary: the transactions Apply and Remove send are, message for message,
// what github.com/google/nftables builds for the same objects (type, nfgenmsg header and every
// attribute byte), except for what we change on purpose: only the last message before
// BATCH_END asks for an acknowledgement, rules are not echoed back, and the messages are
// numbered from 1 in one buffer.
func TestBatchMatchesLibrary(t *testing.T) {
	custom := testSettings()
	custom.InboundAll, custom.InboundPorts = false, []uint16{80, 8080}
	custom.OutboundAll, custom.OutboundCIDRs = false, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	type tc struct {
		name string
		ours func(tx *nftBatch) error
		lib  func(t *testing.T) []netlink.Message
	}
	var cases []tc
	for _, set := range []struct {
		name string
		s    redirect.Settings
	}{{"defaults", redirect.Defaults()}, {"custom", custom}} {
		for _, fams := range [][]rules.Family{{rules.IPv4, rules.IPv6}, {rules.IPv4}} {
			rs := rules.Build(set.s, fams...)
			for _, present := range [][]rules.Family{nil, {rules.IPv4}, {rules.IPv4, rules.IPv6}} {
				cases = append(cases, tc{
					name: fmt.Sprintf("apply %s %v present %v", set.name, fams, present),
					ours: func(tx *nftBatch) error { return (&NFTables{}).buildApply(tx, rs, present) },
					lib:  func(t *testing.T) []netlink.Message { return libraryApply(t, rs, present) },
				})
			}
		}
	}
	cases = append(cases, tc{
		name: "remove",
		ours: func(tx *nftBatch) error {
			for _, f := range allFamilies {
				tx.addTable(byte(tableFamily(f)), contract.NFTablesTableName, false)
				tx.delTable(byte(tableFamily(f)), contract.NFTablesTableName)
			}
			return nil
		},
		lib: func(t *testing.T) []netlink.Message {
			return libraryBatch(t, func(c *nftables.Conn) {
				for _, f := range allFamilies {
					tb := &nftables.Table{Name: contract.NFTablesTableName, Family: tableFamily(f)}
					c.AddTable(tb)
					c.DelTable(tb)
				}
			})
		},
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tx nftBatch
			if err := c.ours(&tx); err != nil {
				t.Fatal(err)
			}
			buf, last, err := tx.marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, want := splitMessages(t, buf), c.lib(t)
			if len(got) != len(want) {
				t.Fatalf("%d messages, the library sends %d", len(got), len(want))
			}
			if last != uint32(len(got)-1) {
				t.Errorf("last = %d, want %d (the message before BATCH_END)", last, len(got)-1)
			}
			for i := range got {
				g, w := got[i].Header, want[i].Header
				if g.Type != w.Type {
					t.Fatalf("message %d: type %#x, the library's %#x", i+1, g.Type, w.Type)
				}
				if g.Sequence != uint32(i+1) || g.PID != 0 {
					t.Errorf("message %d: sequence %d pid %d", i+1, g.Sequence, g.PID)
				}
				wantFlags := w.Flags &^ (netlink.Acknowledge | netlink.Echo)
				if uint32(i+1) == last {
					wantFlags |= netlink.Acknowledge
				}
				if g.Flags != wantFlags {
					t.Errorf("message %d (type %#x): flags %#x, want %#x", i+1, g.Type, g.Flags, wantFlags)
				}
				if !bytes.Equal(got[i].Data, want[i].Data) {
					t.Errorf("message %d (type %#x): payload\n%x\nthe library's\n%x", i+1, g.Type, got[i].Data, want[i].Data)
				}
			}
		})
	}
}

// TestBatchMarshal: an empty batch and a batch with an encoding error send nothing and say
// why; messages are aligned and numbered.
func TestBatchMarshal(t *testing.T) {
	var empty nftBatch
	if _, _, err := empty.marshal(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty batch: %v", err)
	}
	if err := empty.send(); err == nil {
		t.Fatal("empty batch sent")
	}

	var broken nftBatch
	broken.addTable(unix.NFPROTO_IPV4, "t", true)
	broken.addTable(unix.NFPROTO_IPV4, strings.Repeat("x", 70000), true)
	broken.addTable(unix.NFPROTO_IPV4, "u", true)
	_, _, err := broken.marshal()
	if err == nil || !strings.Contains(err.Error(), "message 2") {
		t.Fatalf("broken batch: %v, want the error of message 2", err)
	}

	var one nftBatch
	one.addTable(unix.NFPROTO_IPV6, "abc", false) // 3 bytes + NUL: the name attribute needs padding
	buf, last, err := one.marshal()
	if err != nil {
		t.Fatal(err)
	}
	msgs := splitMessages(t, buf)
	if len(msgs) != 3 || last != 2 || msgs[0].Header.Type != unix.NFNL_MSG_BATCH_BEGIN || msgs[2].Header.Type != unix.NFNL_MSG_BATCH_END {
		t.Fatalf("messages %+v, last %d", msgs, last)
	}
	if msgs[1].Header.Flags&netlink.Acknowledge == 0 || msgs[0].Header.Flags&netlink.Acknowledge != 0 {
		t.Fatalf("acknowledgement flags: %+v", msgs)
	}
}
