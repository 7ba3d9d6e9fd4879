// Package h2relay relays one HTTP/2 client connection (prior knowledge, h2c) to one upstream
// connection while watching its frames: every stream yields one Stream record (method,
// authority, path, status, gRPC status and message, body bytes each way, duration).
//
// It is a frame-observing relay, not a terminating proxy: each frame is read with the
// golang.org/x/net/http2 Framer, checked, and its original bytes are forwarded unchanged to
// the other side. Flow control, SETTINGS, PING, RST_STREAM and GOAWAY therefore stay end to
// end; the relay holds at most one frame per direction, and a slow reader stops the relay's
// reads from the writer (TCP back-pressure). Header blocks are decoded with one HPACK decoder
// per direction, fed every block in order so that its dynamic table follows the sender's
// encoder. Because the receiver's HPACK state depends on every header block, a header block
// can never be dropped: a bad one is a connection error.
//
// What the relay itself enforces (a bad peer gets GOAWAY or RST_STREAM, the other side a
// clean close): the connection preface and SETTINGS first, frame sizes (the receiver's
// SETTINGS_MAX_FRAME_SIZE, capped at MaxFrameSize), the decoded header-list size and the bytes
// one header block may span (CONTINUATION flood), stream-id rules (new streams ascend, no
// HEADERS or DATA on idle streams, no HEADERS on closed ones), a bound on open streams, and
// rapid reset (CVE-2023-44487): a client whose streams are mostly reset before their
// response starts gets GOAWAY(ENHANCE_YOUR_CALM). Server push is not relayed (PUSH_PROMISE
// is a connection error; gRPC and current browsers never use it).
package h2relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// PrefacePrefix is how the client preface starts: enough to route a connection here; the
// relay checks the whole preface (ClientPreface).
const PrefacePrefix = "PRI * HTTP/2.0\r\n"

// ClientPreface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const ClientPreface = http2.ClientPreface

// MaxFrameSize caps the frame size the relay accepts whatever the endpoints negotiate: it is
// the most memory one frame in flight may take.
const MaxFrameSize = 1 << 20

const (
	// headerTableLimit is the largest HPACK dynamic table an encoder may ask for; endpoints
	// commonly advertise 4096.
	headerTableLimit = 64 << 10
	// rapidResetMinStreams and the one-half ratio: after this many streams on a connection,
	// a client that reset more than half of them before their response began is cut off.
	rapidResetMinStreams = 200
	bufSize              = 32 << 10
)

// Limits are the relay's bounds (from the proxy's configuration).
type Limits struct {
	MaxHeaderListSize uint32        // decoded header fields of one block (HPACK size rule)
	MaxOpenStreams    int           // streams open at once on one connection
	PrefaceTimeout    time.Duration // the client preface must arrive within this
	IdleTimeout       time.Duration // a client connection with no open stream is closed after this
}

// Stream is one finished stream, passed to the Observer.
type Stream struct {
	ID          uint32
	Start       time.Time
	Duration    time.Duration
	Method      string
	Authority   string
	Path        string
	Status      int    // final :status, 0 when none arrived
	GRPCStatus  string // grpc-status as sent, "" when none
	GRPCMessage string // grpc-message, percent-encoded as on the wire
	ReqBytes    int64  // DATA payload bytes from the client
	RespBytes   int64  // DATA payload bytes from the upstream
	Err         string // why the stream did not end normally, "" when it did
}

// Observer receives every finished stream; it is called with the relay's lock held and must
// not block.
type Observer func(*Stream)

// side is one end of the relay.
type side struct {
	name string // "client" or "upstream"
	conn net.Conn
	br   *bufio.Reader

	wmu sync.Mutex // guards bw and wfr
	bw  *bufio.Writer
	wfr *http2.Framer // writes the relay's own frames (GOAWAY, RST_STREAM, PING)

	// maxFrame bounds frames this side may send: the other side's SETTINGS_MAX_FRAME_SIZE.
	maxFrame atomic.Uint32
}

// stream is the relay's view of one open stream.
type stream struct {
	Stream
	clientDone bool // client sent END_STREAM
	serverDone bool // upstream sent END_STREAM
	responded  bool // a final response head arrived
}

// Relay is one client connection and its upstream connection.
type Relay struct {
	lim    Limits
	obs    Observer
	client *side
	up     *side

	mu           sync.Mutex
	streams      map[uint32]*stream
	lastClientID uint32 // highest stream id the client opened
	sawSettings  [2]bool
	totalStreams int
	earlyResets  int
	drainState   int // 0 none, 1 first GOAWAY+PING sent, 2 final GOAWAY sent
	drainWanted  bool
	drained      bool     // drain complete: close after the current frame
	refused      []uint32 // streams opened after the final GOAWAY, to reset once forwarded
	closed       bool
	closeErr     error

	drainPing [8]byte // opaque data of the PING that follows the first drain GOAWAY
	drainOnce sync.Once
	done      chan struct{}
}

// drainPingSeq makes each relay's drain PING its own: two relays in a row (a pod calling
// itself goes through the outbound and the inbound relay) must not take each other's answer.
var drainPingSeq atomic.Uint64

// ErrBadPreface is returned by Serve when the client's first bytes are not the preface.
var ErrBadPreface = errors.New("http2: bad client connection preface")

// New prepares a relay for client, whose unread bytes (the preface first) are in clientR.
func New(client net.Conn, clientR *bufio.Reader, lim Limits, obs Observer) *Relay {
	if lim.MaxHeaderListSize == 0 {
		lim.MaxHeaderListSize = 64 << 10
	}
	if lim.MaxOpenStreams == 0 {
		lim.MaxOpenStreams = 1000
	}
	if lim.PrefaceTimeout == 0 {
		lim.PrefaceTimeout = 10 * time.Second
	}
	r := &Relay{lim: lim, obs: obs, streams: map[uint32]*stream{}, done: make(chan struct{})}
	r.drainPing = [8]byte{'s', 'l', 'd'}
	binary.BigEndian.PutUint32(r.drainPing[4:], uint32(drainPingSeq.Add(1)))
	r.client = newSide("client", client, clientR)
	return r
}

func newSide(name string, c net.Conn, br *bufio.Reader) *side {
	if br == nil {
		br = bufio.NewReaderSize(c, bufSize)
	}
	s := &side{name: name, conn: c, br: br, bw: bufio.NewWriterSize(c, bufSize)}
	s.wfr = http2.NewFramer(s.bw, nil)
	s.maxFrame.Store(16384) // RFC 9113 §6.5.2 initial SETTINGS_MAX_FRAME_SIZE
	return s
}

// Serve checks the client preface, dials the upstream with dial, relays until either side
// ends, and closes both connections. Streams still open at the end are reported with an
// error. It returns why the connection ended (nil for a clean end).
func (r *Relay) Serve(dial func() (net.Conn, error)) error {
	defer close(r.done)
	c := r.client
	c.conn.SetReadDeadline(time.Now().Add(r.lim.PrefaceTimeout))
	p, err := c.br.Peek(len(ClientPreface))
	c.conn.SetReadDeadline(time.Time{})
	if err != nil || string(p) != ClientPreface {
		// RFC 9113 §3.4: an invalid preface is a connection error of type PROTOCOL_ERROR.
		c.send(func(fr *http2.Framer) { fr.WriteGoAway(0, http2.ErrCodeProtocol, []byte("bad connection preface")) })
		c.conn.Close()
		return ErrBadPreface
	}
	uc, err := dial()
	if err != nil {
		c.conn.Close()
		return fmt.Errorf("dial upstream: %w", err)
	}
	r.up = newSide("upstream", uc, nil)
	// The preface goes to the upstream as it came.
	c.br.Discard(len(ClientPreface))
	r.up.bw.WriteString(ClientPreface)

	errc := make(chan error, 2)
	go func() {
		err := r.pump(r.up, r.client)
		r.closeBoth(err) // whichever pump ends first ends the relay
		errc <- err
	}()
	err = r.pump(r.client, r.up)
	r.closeBoth(err)
	<-errc
	r.mu.Lock()
	for id, s := range r.streams {
		s.Err = "connection closed before the stream ended"
		r.finish(id, s)
	}
	err = r.closeErr
	r.mu.Unlock()
	return err
}

// Drain starts a graceful end (RFC 9113 §6.8): GOAWAY with the highest stream id and a PING
// to the client; once the PING comes back, a final GOAWAY naming the last stream the client
// opened; the connection closes when the streams up to it have finished. It does not block.
func (r *Relay) Drain() {
	r.drainOnce.Do(func() {
		go func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.drainWanted = true
			r.advanceDrain()
		}()
	})
}

// advanceDrain moves the drain on when it can; r.mu is held.
func (r *Relay) advanceDrain() {
	if !r.drainWanted || r.closed || r.up == nil || !r.sawSettings[1] {
		return // the client's first frame from the server side must be the upstream's SETTINGS
	}
	c := r.client
	switch r.drainState {
	case 0:
		c.send(func(fr *http2.Framer) {
			fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, []byte("draining"))
			fr.WritePing(false, r.drainPing)
		})
		r.drainState = 1
	case 2:
		if len(r.streams) == 0 {
			r.closeLocked(nil)
		}
	}
}

// pump reads frames from src and forwards them to dst until an error.
func (r *Relay) pump(src, dst *side) error {
	fromClient := src == r.client
	rec := &recorder{r: src.br, limit: MaxFrameSize + 3*int(r.lim.MaxHeaderListSize) + 9}
	fr := http2.NewFramer(nil, rec)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.ReadMetaHeaders.SetAllowedMaxDynamicTableSize(headerTableLimit)
	fr.MaxHeaderListSize = r.lim.MaxHeaderListSize
	idleSet := false
	for {
		fr.SetMaxReadFrameSize(min(src.maxFrame.Load(), MaxFrameSize))
		if fromClient && r.lim.IdleTimeout > 0 {
			r.mu.Lock()
			idle := len(r.streams) == 0
			r.mu.Unlock()
			if idle {
				src.conn.SetReadDeadline(time.Now().Add(r.lim.IdleTimeout))
				idleSet = true
			} else if idleSet {
				src.conn.SetReadDeadline(time.Time{})
				idleSet = false
			}
		}
		rec.buf = rec.buf[:0]
		f, err := fr.ReadFrame()
		if err != nil {
			if r.streamError(src, dst, rec.buf, err) {
				if err := forward(src, dst, nil); err != nil {
					return err
				}
				continue
			}
			return r.readError(src, fr, err)
		}
		fwd, err := r.observe(src, dst, f)
		if err != nil {
			return err
		}
		raw := rec.buf
		if !fwd {
			raw = nil
		}
		if err := forward(src, dst, raw); err != nil {
			return err
		}
		if !fwd {
			continue
		}
		r.mu.Lock()
		drained := r.drained
		var refused []uint32
		if fromClient {
			// Only the client pump, which has just forwarded their HEADERS, may reset them.
			refused, r.refused = r.refused, nil
		}
		r.mu.Unlock()
		for _, id := range refused {
			r.up.send(func(fr *http2.Framer) { fr.WriteRSTStream(id, http2.ErrCodeCancel) })
			r.client.send(func(fr *http2.Framer) { fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
		}
		if drained {
			r.closeBoth(nil)
			return nil
		}
		if fromClient {
			continue
		}
		if _, ok := f.(*http2.SettingsFrame); ok {
			// The client has the upstream's first SETTINGS now: a pending drain may start.
			r.mu.Lock()
			r.advanceDrain()
			r.mu.Unlock()
		}
	}
}

// send writes frames of the relay's own to s and flushes them. The write has a deadline: a
// peer that stops reading cannot hold the relay (which may hold r.mu) for longer.
func (s *side) send(write func(fr *http2.Framer)) {
	s.wmu.Lock()
	s.conn.SetWriteDeadline(time.Now().Add(injectTimeout))
	write(s.wfr)
	s.bw.Flush()
	s.conn.SetWriteDeadline(time.Time{})
	s.wmu.Unlock()
}

// injectTimeout bounds a write of the relay's own frames.
const injectTimeout = 5 * time.Second

// forward writes p (a frame's bytes, or nothing for a dropped frame) to dst and flushes what
// dst has buffered unless the next frame from src is already here: frames that arrive
// together leave together, and a dropped frame never strands the ones before it.
func forward(src, dst *side, p []byte) error {
	dst.wmu.Lock()
	defer dst.wmu.Unlock()
	if len(p) > 0 {
		if _, err := dst.bw.Write(p); err != nil {
			return fmt.Errorf("write to %s: %w", dst.name, err)
		}
	}
	if dst.bw.Buffered() > 0 && !moreBuffered(src.br) {
		if err := dst.bw.Flush(); err != nil {
			return fmt.Errorf("write to %s: %w", dst.name, err)
		}
	}
	return nil
}

// moreBuffered reports whether a whole next frame is already buffered in br, so that the
// writer may wait for it before flushing.
func moreBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := br.Peek(9)
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// recorder keeps the bytes the Framer reads, so that the frame goes on unchanged.
type recorder struct {
	r     io.Reader
	buf   []byte
	limit int
}

var errHeaderBlockTooLarge = errors.New("header block spans too many bytes")

func (rc *recorder) Read(p []byte) (int, error) {
	if len(rc.buf)+len(p) > rc.limit {
		return 0, errHeaderBlockTooLarge
	}
	n, err := rc.r.Read(p)
	rc.buf = append(rc.buf, p[:n]...)
	return n, err
}

// streamError answers a stream-level fault in a frame that carries no header block (a zero
// WINDOW_UPDATE increment, a stream depending on itself): that stream alone is reset and the
// frame dropped. It reports whether the relay goes on.
func (r *Relay) streamError(src, dst *side, raw []byte, err error) bool {
	var se http2.StreamError
	if !errors.As(err, &se) || len(raw) < 9 {
		return false
	}
	if t := http2.FrameType(raw[3]); t == http2.FrameHeaders || t == http2.FrameContinuation {
		return false // the receiver's HPACK state needs every block: a connection error
	}
	r.mu.Lock()
	r.resetStream(src, dst, se.StreamID, se.Code, fmt.Sprintf("%s sent a bad frame: %v", src.name, se))
	r.mu.Unlock()
	return true
}

// readError turns a failed read from src into the right answer and ends the relay.
func (r *Relay) readError(src *side, fr *http2.Framer, err error) error {
	var se http2.StreamError
	var ce http2.ConnectionError
	detail := ""
	if d := fr.ErrorDetail(); d != nil {
		detail = d.Error()
	}
	switch {
	case errors.As(err, &se):
		return r.connError(src, http2.ErrCodeProtocol, fmt.Sprintf("bad header block: %v", se))
	case errors.As(err, &ce):
		if detail == "" {
			detail = fmt.Sprintf("%v", ce)
		}
		return r.connError(src, http2.ErrCode(ce), detail)
	case errors.Is(err, http2.ErrFrameTooLarge):
		return r.connError(src, http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
	case errors.Is(err, errHeaderBlockTooLarge):
		return r.connError(src, http2.ErrCodeEnhanceYourCalm, "header block too large (CONTINUATION flood)")
	case errors.Is(err, os.ErrDeadlineExceeded) && src == r.client:
		r.mu.Lock()
		idle := len(r.streams) == 0
		r.mu.Unlock()
		if idle {
			r.goAway(r.client, http2.ErrCodeNo, "idle timeout")
			r.closeBoth(nil)
			return nil
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		r.closeBoth(nil)
		return nil
	}
	err = fmt.Errorf("read from %s: %w", src.name, err)
	r.closeBoth(err)
	return err
}

// connError answers a protocol error by src: GOAWAY to src (and, when src is the upstream,
// a GOAWAY to the client so that it knows the streams are gone), then both close.
func (r *Relay) connError(src *side, code http2.ErrCode, detail string) error {
	err := fmt.Errorf("%s: connection error %v: %s", src.name, code, detail)
	r.goAway(src, code, detail)
	if src == r.up {
		r.goAway(r.client, code, "upstream: "+detail)
	}
	r.closeBoth(err)
	return err
}

// goAway sends GOAWAY to s (the last stream id is the client's highest; a GOAWAY to the
// upstream, sent on the client's behalf, names no server stream).
func (r *Relay) goAway(s *side, code http2.ErrCode, detail string) {
	r.mu.Lock()
	last := r.lastClientID
	if s == r.up {
		last = 0
	}
	r.mu.Unlock()
	s.send(func(fr *http2.Framer) { fr.WriteGoAway(last, code, []byte(detail)) })
}

// closeBoth ends the relay: both connections close, which stops both pumps.
func (r *Relay) closeBoth(err error) {
	r.mu.Lock()
	r.closeLocked(err)
	r.mu.Unlock()
}

func (r *Relay) closeLocked(err error) {
	if r.closed {
		return
	}
	r.closed, r.closeErr = true, err
	for _, s := range []*side{r.client, r.up} {
		if s == nil {
			continue
		}
		// A pump blocked writing to a peer that does not read holds wmu: the deadline
		// frees it, then what is buffered gets one second to go out.
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.wmu.Lock()
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.bw.Flush()
		s.wmu.Unlock()
		s.conn.Close()
	}
}

// resetStream refuses one stream: RST_STREAM(code) to src, RST_STREAM(CANCEL) to dst when
// the stream is open there; r.mu is held.
func (r *Relay) resetStream(src, dst *side, id uint32, code http2.ErrCode, why string) {
	src.send(func(fr *http2.Framer) { fr.WriteRSTStream(id, code) })
	if s, ok := r.streams[id]; ok {
		dst.send(func(fr *http2.Framer) { fr.WriteRSTStream(id, http2.ErrCodeCancel) })
		s.Err = why
		r.finish(id, s)
	}
}

// finish reports stream id and forgets it; r.mu is held.
func (r *Relay) finish(id uint32, s *stream) {
	delete(r.streams, id)
	s.Duration = time.Since(s.Start)
	if r.obs != nil {
		r.obs(&s.Stream)
	}
	if r.drainState == 2 && len(r.streams) == 0 {
		r.drained = true // the pump closes once it has forwarded the frame that ended the stream
	}
}

// observe checks frame f from src and updates the streams; it says whether to forward it.
// An error has already been answered (connection error) and ends the pump.
func (r *Relay) observe(src, dst *side, f http2.Frame) (bool, error) {
	fromClient := src == r.client
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := 0
	if !fromClient {
		idx = 1
	}
	if !r.sawSettings[idx] {
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			return false, r.connErrorLocked(src, http2.ErrCodeProtocol, "first frame is not SETTINGS")
		}
		r.sawSettings[idx] = true
	}
	id := f.Header().StreamID
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true, nil
		}
		err := f.ForeachSetting(func(s http2.Setting) error {
			if err := s.Valid(); err != nil {
				return err
			}
			if s.ID == http2.SettingMaxFrameSize {
				dst.maxFrame.Store(s.Val) // bounds what the other side sends
			}
			return nil
		})
		if err != nil {
			code := http2.ErrCodeProtocol
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				code = http2.ErrCode(ce)
			}
			return false, r.connErrorLocked(src, code, err.Error())
		}
	case *http2.MetaHeadersFrame:
		if fromClient {
			return r.clientHeaders(f)
		}
		return r.upstreamHeaders(f)
	case *http2.DataFrame:
		s, ok := r.streams[id]
		if !ok {
			if r.idle(id) {
				return false, r.connErrorLocked(src, http2.ErrCodeProtocol, fmt.Sprintf("DATA on idle stream %d", id))
			}
			return true, nil // a closed stream: the receiver accounts for it in flow control
		}
		n := int64(len(f.Data()))
		if fromClient {
			s.ReqBytes += n
			if f.StreamEnded() {
				s.clientDone = true
			}
		} else {
			s.RespBytes += n
			if f.StreamEnded() {
				s.serverDone = true
			}
		}
		if s.clientDone && s.serverDone {
			r.finish(id, s)
		}
	case *http2.RSTStreamFrame:
		s, ok := r.streams[id]
		if !ok {
			if r.idle(id) {
				return false, r.connErrorLocked(src, http2.ErrCodeProtocol, fmt.Sprintf("RST_STREAM on idle stream %d", id))
			}
			return true, nil
		}
		if fromClient {
			s.Err = "reset by the client: " + f.ErrCode.String()
			if !s.responded {
				r.earlyResets++
			}
		} else {
			s.Err = "reset by the upstream: " + f.ErrCode.String()
		}
		r.finish(id, s)
		if fromClient && r.totalStreams >= rapidResetMinStreams && 2*r.earlyResets > r.totalStreams {
			// Forward this reset, then cut the connection.
			dst.send(func(fr *http2.Framer) { fr.WriteRSTStream(id, f.ErrCode) })
			return false, r.connErrorLocked(src, http2.ErrCodeEnhanceYourCalm, "too many streams reset before their response (rapid reset)")
		}
	case *http2.PingFrame:
		if fromClient && f.IsAck() && f.Data == r.drainPing {
			if r.drainState == 1 {
				r.drainState = 2
				c := r.client
				last := r.lastClientID
				c.send(func(fr *http2.Framer) { fr.WriteGoAway(last, http2.ErrCodeNo, []byte("draining")) })
				r.advanceDrain()
			}
			return false, nil // the relay's own PING: not the upstream's
		}
	case *http2.PushPromiseFrame:
		return false, r.connErrorLocked(src, http2.ErrCodeProtocol, "PUSH_PROMISE is not relayed")
	}
	return true, nil
}

// idle reports whether stream id was never opened by its initiator (the client: odd ids).
func (r *Relay) idle(id uint32) bool {
	return id%2 == 0 || id > r.lastClientID
}

// connErrorLocked is connError with r.mu held.
func (r *Relay) connErrorLocked(src *side, code http2.ErrCode, detail string) error {
	r.mu.Unlock()
	err := r.connError(src, code, detail)
	r.mu.Lock()
	return err
}

func (r *Relay) clientHeaders(f *http2.MetaHeadersFrame) (bool, error) {
	id := f.StreamID
	if id%2 == 0 {
		return false, r.connErrorLocked(r.client, http2.ErrCodeProtocol, fmt.Sprintf("client opened even stream %d", id))
	}
	if s, ok := r.streams[id]; ok {
		if s.clientDone {
			return false, r.connErrorLocked(r.client, http2.ErrCodeStreamClosed, fmt.Sprintf("HEADERS on half-closed stream %d", id))
		}
		if !f.StreamEnded() {
			return false, r.connErrorLocked(r.client, http2.ErrCodeProtocol, fmt.Sprintf("trailers without END_STREAM on stream %d", id))
		}
		s.clientDone = true
		if s.serverDone {
			r.finish(id, s)
		}
		return true, nil
	}
	if id <= r.lastClientID {
		return false, r.connErrorLocked(r.client, http2.ErrCodeStreamClosed, fmt.Sprintf("HEADERS on closed stream %d", id))
	}
	if r.drainState == 2 {
		// A stream above the final GOAWAY's last id (a client may still have had one queued
		// when it read the GOAWAY) is refused, so that the client retries it elsewhere. The
		// header block still goes to the upstream, whose HPACK state needs it, and is reset
		// there at once.
		r.lastClientID = id
		r.refused = append(r.refused, id)
		return true, nil
	}
	if len(r.streams) >= r.lim.MaxOpenStreams {
		return false, r.connErrorLocked(r.client, http2.ErrCodeEnhanceYourCalm, fmt.Sprintf("more than %d open streams", r.lim.MaxOpenStreams))
	}
	r.lastClientID = id
	r.totalStreams++
	s := &stream{Stream: Stream{ID: id, Start: time.Now(), Method: f.PseudoValue("method"),
		Authority: f.PseudoValue("authority"), Path: f.PseudoValue("path")}}
	s.clientDone = f.StreamEnded()
	if s.Authority == "" {
		for _, hf := range f.RegularFields() {
			if hf.Name == "host" {
				s.Authority = hf.Value
			}
		}
	}
	r.streams[id] = s
	return true, nil
}

func (r *Relay) upstreamHeaders(f *http2.MetaHeadersFrame) (bool, error) {
	id := f.StreamID
	s, ok := r.streams[id]
	if !ok {
		if r.idle(id) {
			return false, r.connErrorLocked(r.up, http2.ErrCodeProtocol, fmt.Sprintf("HEADERS on idle stream %d", id))
		}
		return true, nil // the client reset it meanwhile: it keeps the HPACK state in step
	}
	if st := f.PseudoValue("status"); st != "" {
		code, err := strconv.Atoi(st)
		if err != nil || code < 100 || code > 999 {
			return false, r.connErrorLocked(r.up, http2.ErrCodeProtocol, fmt.Sprintf("bad :status %q on stream %d", st, id))
		}
		if code >= 200 {
			s.Status, s.responded = code, true
		}
	}
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "grpc-status":
			s.GRPCStatus = hf.Value
		case "grpc-message":
			s.GRPCMessage = hf.Value
		}
	}
	if f.StreamEnded() {
		s.serverDone = true
		if s.clientDone {
			r.finish(id, s)
		}
	}
	return true, nil
}
