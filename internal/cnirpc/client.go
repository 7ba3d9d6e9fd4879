package cnirpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrVersion is wrapped by the error of an answer whose protocol version this build does not
// speak (an agent and a plugin of different releases during a rolling upgrade).
var ErrVersion = errors.New("unknown protocol version")

// ErrUnreachable is wrapped by the errors of a Call that got no answer: no socket, nobody
// listening, or no answer before the deadline.
var ErrUnreachable = errors.New("node agent unreachable")

// AgentError is an answer that carries an error: the agent understood the request and refused
// or could not serve it.
type AgentError struct{ Message string }

func (e *AgentError) Error() string { return "node agent: " + e.Message }

// Call sends req (its version set to Version) to the agent on socket and returns its answer,
// waiting at most timeout (and not past ctx). An answer of another version is an error wrapping
// ErrVersion; an answer that carries an error is an *AgentError.
func Call(ctx context.Context, socket string, req Request, timeout time.Duration) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return Response{}, fmt.Errorf("%w at %s: %w", ErrUnreachable, socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// The context may end before the deadline (cancelled): unblock the read then too.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req.V = Version
	if err := WriteFrame(conn, req); err != nil {
		return Response{}, fmt.Errorf("%w at %s: %w", ErrUnreachable, socket, err)
	}
	var resp Response
	if err := ReadFrame(conn, &resp); err != nil {
		if errors.Is(err, ErrMalformed) {
			return Response{}, fmt.Errorf("node agent at %s: %w", socket, err)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Response{}, fmt.Errorf("%w at %s: no answer within %s: %w", ErrUnreachable, socket, timeout, err)
		}
		return Response{}, fmt.Errorf("%w at %s: %w", ErrUnreachable, socket, err)
	}
	if resp.V != Version {
		return Response{}, fmt.Errorf("node agent at %s answered protocol version %d, this plugin speaks version %d (agent and plugin from different releases?): %w",
			socket, resp.V, Version, ErrVersion)
	}
	if resp.Error != "" {
		return resp, &AgentError{Message: resp.Error}
	}
	return resp, nil
}
