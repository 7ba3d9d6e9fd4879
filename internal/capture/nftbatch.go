package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// transact builds one nftables transaction with build and sends it to the kernel of the
// calling thread's network namespace, atomically.
//
// github.com/google/nftables builds the messages, but its Flush asks the kernel to
// acknowledge every message and then reads the acknowledgements one by one; for a pod's ~50
// messages that costs more than the kernel's own work. So the connection's dial hook (the
// library's only way to reach the marshalled batch) hands the batch to sendBatch, which sends
// it on a netlink socket of its own with a single acknowledgement request, on the last
// message; the kernel reports any failing message regardless, and then applies nothing.
func transact(build func(c *nftables.Conn) error) error {
	var sendErr error
	sent := false
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req != nil && !sent {
			sent = true
			sendErr = sendBatch(req)
		}
		// The library waits for one acknowledgement per message: give it success; the
		// transaction's real outcome is sendErr.
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 20)}}, nil
	}))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := build(c); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if !sent {
		return errors.New("nftables: the transaction was never sent")
	}
	return sendErr
}

// sendBatch sends a batch (BATCH_BEGIN, messages, BATCH_END) in one write on a netlink socket
// of the calling thread's network namespace and waits for the kernel's verdict: the
// acknowledgement of the last message, or the error of the first failing one.
//
// The socket is used with plain blocking system calls on the calling thread: the netlink
// library's socket goes through the runtime's poller and starts a goroutine per call to watch
// its context, and on a thread locked into a pod's namespace every such hand-off parks the
// thread and wakes another one, which cost more than the kernel's whole transaction.
func sendBatch(req []netlink.Message) error {
	if len(req) < 3 {
		return fmt.Errorf("nftables: a batch of %d messages has nothing in it", len(req))
	}
	var buf []byte
	for i := range req {
		m := req[i]
		m.Header.Flags &^= netlink.Acknowledge
		if i == len(req)-2 {
			m.Header.Flags |= netlink.Acknowledge
		}
		m.Header.Sequence = uint32(i + 1)
		m.Header.PID = 0
		m.Header.Length = uint32(nlmsgAlign(unix.NLMSG_HDRLEN + len(m.Data)))
		b, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("nftables: marshal message %d: %w", i, err)
		}
		buf = append(buf, b...)
	}
	last := uint32(len(req) - 1) // sequence of the last message before BATCH_END

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
