package capture

import (
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

// sendBatch sends a batch (BATCH_BEGIN, messages, BATCH_END) and waits for the kernel's
// verdict: the acknowledgement of the last message, or the error of the first failing one.
func sendBatch(req []netlink.Message) error {
	if len(req) < 3 {
		return fmt.Errorf("nftables: a batch of %d messages has nothing in it", len(req))
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("nftables: netlink dial: %w", err)
	}
	defer nl.Close()
	if err := nl.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for i := range req {
		req[i].Header.Flags &^= netlink.Acknowledge
	}
	req[len(req)-2].Header.Flags |= netlink.Acknowledge
	sent, err := nl.SendMessages(req)
	if err != nil {
		return fmt.Errorf("nftables: send batch: %w", err)
	}
	last := sent[len(sent)-2].Header.Sequence
	for {
		msgs, err := nl.Receive()
		if err != nil {
			return fmt.Errorf("nftables: transaction refused: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == last {
				return nil
			}
		}
	}
}
