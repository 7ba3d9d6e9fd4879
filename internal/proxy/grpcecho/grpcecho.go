// Package grpcecho is a small gRPC service for the proxy's tests and benchmark: every call
// kind (unary, client-, server- and bidirectional streaming) on a hand-written service
// description with protobuf's BytesValue as the message, so no generated code is needed.
//
// Unary answers by its request: "status:<code>:<message>" fails with that gRPC status,
// "wait" blocks until the call's context ends and reports how it ended on Handler.Ended,
// "sleep:<duration>" answers "slept" after that long, and anything else is echoed. "wait" and
// "sleep:" calls signal Handler.Started when they begin. The metadata value "x-echo", when sent, comes back in the response
// header "x-echo-header" and in the trailer "x-echo-trailer".
package grpcecho

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Service is the full service name; methods are /Service/Unary and so on.
const Service = "sidelane.test.Echo"

// Ended is how a "wait" call's context ended on the server.
type Ended struct {
	Err         error // context.Canceled or context.DeadlineExceeded
	HadDeadline bool  // the client's deadline reached the server (grpc-timeout)
	Deadline    time.Time
}

// Handler serves the service.
type Handler struct {
	Ended   chan Ended    // one value per ended "wait" call (buffered by the caller)
	Started chan struct{} // one value per "wait" or "sleep:" call that began (never blocks)
}

func (h *Handler) started() {
	select {
	case h.Started <- struct{}{}:
	default:
	}
}

// Register adds the service to s.
func Register(s *grpc.Server, h *Handler) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: Service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return h.unary(ctx, in)
		}}},
		Streams: []grpc.StreamDesc{
			{StreamName: "ClientStream", ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error { return clientStream(st) }},
			{StreamName: "ServerStream", ServerStreams: true, Handler: func(_ any, st grpc.ServerStream) error { return serverStream(st) }},
			{StreamName: "Bidi", ClientStreams: true, ServerStreams: true, Handler: func(_ any, st grpc.ServerStream) error { return bidi(st) }},
		},
	}, h)
}

func echoMetadata(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo"); len(v) > 0 {
		grpc.SetHeader(ctx, metadata.Pairs("x-echo-header", v[0]))
		grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", v[0]))
	}
}

func (h *Handler) unary(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	echoMetadata(ctx)
	req := string(in.Value)
	switch {
	case strings.HasPrefix(req, "status:"):
		parts := strings.SplitN(req, ":", 3)
		code, err := strconv.Atoi(parts[1])
		if err != nil || len(parts) != 3 {
			return nil, status.Error(codes.InvalidArgument, "want status:<code>:<message>")
		}
		return nil, status.Error(codes.Code(code), parts[2])
	case strings.HasPrefix(req, "sleep:"):
		d, err := time.ParseDuration(req[len("sleep:"):])
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		h.started()
		select {
		case <-time.After(d):
			return wrapperspb.Bytes([]byte("slept")), nil
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	case req == "wait":
		h.started()
		<-ctx.Done()
		dl, ok := ctx.Deadline()
		if h.Ended != nil {
			h.Ended <- Ended{Err: ctx.Err(), HadDeadline: ok, Deadline: dl}
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return in, nil
}

func clientStream(st grpc.ServerStream) error {
	echoMetadata(st.Context())
	var n int
	for {
		in := new(wrapperspb.BytesValue)
		err := st.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			return st.SendMsg(wrapperspb.Bytes([]byte(strconv.Itoa(n))))
		}
		if err != nil {
			return err
		}
		n += len(in.Value)
	}
}

func serverStream(st grpc.ServerStream) error {
	echoMetadata(st.Context())
	in := new(wrapperspb.BytesValue)
	if err := st.RecvMsg(in); err != nil {
		return err
	}
	var count, size int
	if _, err := fmt.Sscanf(string(in.Value), "%d:%d", &count, &size); err != nil {
		return status.Error(codes.InvalidArgument, "want <count>:<size>")
	}
	msg := wrapperspb.Bytes(make([]byte, size))
	for i := 0; i < count; i++ {
		if err := st.SendMsg(msg); err != nil {
			return err
		}
	}
	return nil
}

func bidi(st grpc.ServerStream) error {
	echoMetadata(st.Context())
	for {
		in := new(wrapperspb.BytesValue)
		err := st.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.SendMsg(in); err != nil {
			return err
		}
	}
}

// Unary calls the Unary method.
func Unary(ctx context.Context, cc grpc.ClientConnInterface, in []byte, opts ...grpc.CallOption) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := cc.Invoke(ctx, "/"+Service+"/Unary", wrapperspb.Bytes(in), out, opts...); err != nil {
		return nil, err
	}
	return out.Value, nil
}

// Stream opens one of the streaming methods: "ClientStream", "ServerStream" or "Bidi".
func Stream(ctx context.Context, cc grpc.ClientConnInterface, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	desc := &grpc.StreamDesc{StreamName: method, ClientStreams: method != "ServerStream", ServerStreams: method != "ClientStream"}
	return cc.NewStream(ctx, desc, "/"+Service+"/"+method, opts...)
}

// Send sends one message on a stream opened with Stream.
func Send(st grpc.ClientStream, p []byte) error { return st.SendMsg(wrapperspb.Bytes(p)) }

// Recv receives one message on a stream opened with Stream.
func Recv(st grpc.ClientStream) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := st.RecvMsg(out); err != nil {
		return nil, err
	}
	return out.Value, nil
}
