package cnirpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
)

// Handler serves the requests of one protocol version. It returns the answer's decision (for
// OpDecide) or an error whose message goes back to the plugin.
type Handler interface {
	Decide(ctx context.Context, req DecideRequest, warnings []string) (Decision, error)
	Report(ctx context.Context, r agentapi.Report, warnings []string) error
}

// ServeConn serves one request on conn and closes it. A frame that cannot be read gets an
// error answer when the connection still allows one; a request of another version gets an
// answer of this version that names both, so that the plugin fails closed and says why.
// timeout bounds reading the request and writing the answer (not the handler, which ctx bounds).
func ServeConn(ctx context.Context, conn net.Conn, h Handler, timeout time.Duration) error {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(timeout))
	var req Request
	err := ReadFrame(conn, &req)
	answer := func(resp Response) error {
		resp.V = Version
		conn.SetWriteDeadline(time.Now().Add(timeout))
		return WriteFrame(conn, resp)
	}
	if err != nil {
		if errors.Is(err, ErrMalformed) {
			answer(Response{Error: "request: " + err.Error()})
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("read request: %w", err)
	}
	if req.V != Version {
		return answer(Response{Error: fmt.Sprintf("request of protocol version %d, this agent speaks version %d (plugin and agent from different releases?)", req.V, Version)})
	}
	switch req.Op {
	case OpPing:
		return answer(Response{})
	case OpDecide:
		if req.Decide == nil {
			return answer(Response{Error: `request "decide" without "decide"`})
		}
		d, err := h.Decide(ctx, *req.Decide, req.Warnings)
		if err != nil {
			return answer(Response{Error: err.Error()})
		}
		return answer(Response{Decision: &d})
	case OpReport:
		if req.Report == nil {
			return answer(Response{Error: `request "report" without "report"`})
		}
		if err := h.Report(ctx, *req.Report, req.Warnings); err != nil {
			return answer(Response{Error: err.Error()})
		}
		return answer(Response{})
	}
	return answer(Response{Error: fmt.Sprintf("unknown operation %q (want %q, %q or %q)", req.Op, OpDecide, OpReport, OpPing)})
}

// Serve accepts connections on l and serves each with ServeConn in its own goroutine until ctx
// ends or l fails. It closes l when ctx ends.
func Serve(ctx context.Context, l net.Listener, h Handler, timeout time.Duration) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		go ServeConn(ctx, conn, h, timeout)
	}
}
