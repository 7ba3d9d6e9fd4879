package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sidelane/sidelane/internal/rules"
)

// nftBatch is one nftables transaction, built as the netlink messages the kernel reads
// (NFT_MSG_NEWTABLE, DELTABLE, NEWCHAIN and NEWRULE between NFNL_MSG_BATCH_BEGIN and
// BATCH_END) and sent with send. The expressions of rules are marshalled by
// github.com/google/nftables/expr; the messages around them are ours, because the library's
// Conn.Flush asks the kernel to acknowledge every message and reads the acknowledgements one
// by one, which for a pod's ~50 messages costs more than the kernel's own work, and the
// library offers no other way to send what it built.
//
// The zero value is an empty batch. The first error of a builder method is kept and returned
// by send, which then sends nothing.
type nftBatch struct {
	buf  []byte // the messages after BATCH_BEGIN, each with its header
	msgs int    // how many messages buf holds
	err  error
}

// Values of linux/netfilter.h and linux/netfilter/nfnetlink.h that x/sys/unix lacks.
const (
	nfDrop         = 0 // NF_DROP, a base chain's policy
	nfAccept       = 1 // NF_ACCEPT
	sizeofNfgenmsg = 4 // struct nfgenmsg: family, version, resource id
)

// addTable adds table name of family fam; with exclusive the kernel fails the transaction
// (EEXIST) when the table already exists, otherwise adding an existing table changes nothing.
func (b *nftBatch) addTable(fam byte, name string, exclusive bool) {
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_CREATE)
	if exclusive {
		flags = unix.NLM_F_REQUEST | unix.NLM_F_EXCL
	}
	b.add(unix.NFT_MSG_NEWTABLE, flags, fam, tableAttrs(name))
}

// delTable deletes table name of family fam with every chain and rule in it; the kernel fails
// the transaction (ENOENT) when there is no such table.
func (b *nftBatch) delTable(fam byte, name string) {
	b.add(unix.NFT_MSG_DELTABLE, unix.NLM_F_REQUEST, fam, tableAttrs(name))
}

func tableAttrs(name string) func(ae *netlink.AttributeEncoder) {
	return func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
	}
}

// addChain adds chain ch (without its rules) to table of family fam. A chain with a Hook is a
// base chain: its hook, priority, policy and type are sent too.
func (b *nftBatch) addChain(fam byte, table string, ch rules.NFTChain) {
	b.add(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_REQUEST|unix.NLM_F_CREATE, fam, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
		ae.String(unix.NFTA_CHAIN_NAME, ch.Name)
		if ch.Hook == "" {
			return
		}
		ae.Nested(unix.NFTA_CHAIN_HOOK, func(nae *netlink.AttributeEncoder) error {
			nae.Uint32(unix.NFTA_HOOK_HOOKNUM, hookNum(ch.Hook))
			nae.Uint32(unix.NFTA_HOOK_PRIORITY, uint32(int32(ch.Priority)))
			return nil
		})
		policy := uint32(nfAccept)
		if ch.Policy == "drop" {
			policy = nfDrop
		}
		ae.Uint32(unix.NFTA_CHAIN_POLICY, policy)
		ae.String(unix.NFTA_CHAIN_TYPE, ch.Type)
	})
}

// hookNum is the netfilter hook of an NFTChain's Hook: "output" or "prerouting".
func hookNum(h string) uint32 {
	if h == "output" {
		return unix.NF_INET_LOCAL_OUT
	}
	return unix.NF_INET_PRE_ROUTING
}

// addRule appends a rule of exprs, with userData (NFTA_RULE_USERDATA, nil for none), to chain
// of table of family fam.
func (b *nftBatch) addRule(fam byte, table, chain string, exprs []expr.Any, userData []byte) {
	b.add(unix.NFT_MSG_NEWRULE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND, fam, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
		ae.Nested(unix.NFTA_RULE_EXPRESSIONS, func(nae *netlink.AttributeEncoder) error {
			for _, e := range exprs {
				data, err := expr.Marshal(fam, e)
				if err != nil {
					return fmt.Errorf("rule expression %T: %w", e, err)
				}
				// expr.Marshal returns the element's attributes (name and data).
				nae.Bytes(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, data)
			}
			return nil
		})
		if userData != nil {
			ae.Bytes(unix.NFTA_RULE_USERDATA, userData)
		}
	})
}

// add appends one message of nftables message type typ with the nfgenmsg header of family fam
// and the attributes attrs encodes.
func (b *nftBatch) add(typ uint16, flags uint16, fam byte, attrs func(ae *netlink.AttributeEncoder)) {
	if b.err != nil {
		return
	}
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	data, err := ae.Encode()
	if err != nil {
		b.err = fmt.Errorf("nftables: encode message %d: %w", b.msgs+1, err)
		return
	}
	b.buf = appendNFMsg(b.buf, unix.NFNL_SUBSYS_NFTABLES<<8|typ, flags, fam, 0, data)
	b.msgs++
}

// appendNFMsg appends to buf a netlink message of type typ and flags whose payload is an
// nfgenmsg (family fam, version 0, resource id resID) followed by data, padded to alignment.
// Sequence numbers are set by send.
func appendNFMsg(buf []byte, typ, flags uint16, fam byte, resID uint16, data []byte) []byte {
	l := unix.NLMSG_HDRLEN + sizeofNfgenmsg + len(data)
	start := len(buf)
	buf = append(buf, make([]byte, nlmsgAlign(l))...)
	m := buf[start:]
	binary.NativeEndian.PutUint32(m[0:4], uint32(nlmsgAlign(l)))
	binary.NativeEndian.PutUint16(m[4:6], typ)
	binary.NativeEndian.PutUint16(m[6:8], flags)
	m[16] = fam
	m[17] = unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(m[18:20], resID)
	copy(m[20:], data)
	return buf
}

// marshal returns the whole transaction as one buffer: BATCH_BEGIN, the messages numbered
// 2.. with an acknowledgement requested on the last one only, BATCH_END. It also returns
// the sequence number of the last message, whose acknowledgement is the kernel's "applied".
func (b *nftBatch) marshal() (buf []byte, last uint32, err error) {
	if b.err != nil {
		return nil, 0, b.err
	}
	if b.msgs == 0 {
		return nil, 0, errors.New("nftables: an empty transaction")
	}
	buf = appendNFMsg(make([]byte, 0, len(b.buf)+2*32), unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
	buf = append(buf, b.buf...)
	buf = appendNFMsg(buf, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
	seq := uint32(0)
	for m := buf; len(m) > 0; {
		seq++
		binary.NativeEndian.PutUint32(m[8:12], seq)
		l := int(binary.NativeEndian.Uint32(m[0:4]))
		if int(seq) == b.msgs+1 { // the last message before BATCH_END
			binary.NativeEndian.PutUint16(m[6:8], binary.NativeEndian.Uint16(m[6:8])|unix.NLM_F_ACK)
		}
		m = m[l:]
	}
	return buf, uint32(b.msgs + 1), nil
}

// send applies the transaction to the kernel of the calling thread's network namespace and
// waits for its verdict. The kernel applies all of it or, when any message fails, none of it.
//
// The socket is used with plain blocking system calls on the calling thread: the netlink
// library's socket goes through the runtime's poller and starts a goroutine per call to watch
// its context, and on a thread locked into a pod's namespace every such hand-off parks the
// thread and wakes another one, which cost more than the kernel's whole transaction.
func (b *nftBatch) send() error {
	buf, last, err := b.marshal()
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("nftables: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// Errors quote only the failing message's header, not the whole message.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	tv := unix.Timeval{Sec: int64(batchTimeout / time.Second)}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("nftables: netlink socket: %w", err)
	}
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("nftables: send batch: %w", err)
	}
	rb := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("nftables: waiting for the transaction's verdict: %w", err)
		}
		done, err := batchVerdict(rb[:n], last)
		if err != nil {
			return fmt.Errorf("nftables: transaction refused: %w", err)
		}
		if done {
			return nil
		}
	}
}

// batchTimeout bounds the wait for the kernel's verdict on a transaction.
const batchTimeout = 30 * time.Second

// batchVerdict reads the netlink messages in b: an error message with a non-zero code is the
// transaction's failure (the kernel applied nothing); the acknowledgement of sequence last is
// its success. Other messages are skipped.
func batchVerdict(b []byte, last uint32) (done bool, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, fmt.Errorf("malformed netlink message (length %d of %d bytes)", l, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		seq := binary.NativeEndian.Uint32(b[8:12])
		if typ == unix.NLMSG_ERROR {
			if l < unix.NLMSG_HDRLEN+4 {
				return false, fmt.Errorf("malformed netlink error message (length %d)", l)
			}
			if code := int32(binary.NativeEndian.Uint32(b[16:20])); code != 0 {
				return false, fmt.Errorf("message %d: %w", seq, unix.Errno(-code))
			}
			if seq == last {
				return true, nil
			}
		}
		b = b[min(nlmsgAlign(l), len(b)):]
	}
	return false, nil
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
