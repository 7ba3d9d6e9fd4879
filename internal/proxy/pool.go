package proxy

import (
	"bufio"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bufSize is the size of every connection's read and write buffer.
const bufSize = 4096

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
	copyPool   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// upConn is one upstream connection with its buffers.
type upConn struct {
	c      *net.TCPConn
	rc     syscall.RawConn
	tc     timedConn
	br     *bufio.Reader
	bw     *bufio.Writer
	key    poolKey
	idleAt time.Time
	reused bool // has carried a request before
}

// newUpConn wraps a new upstream connection; each read and write on it waits at most idle.
func newUpConn(c *net.TCPConn, key poolKey, idle time.Duration) (*upConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	u := &upConn{c: c, rc: rc, key: key}
	u.tc = timedConn{c: c, readIdle: idle, writeIdle: idle}
	u.br = readerPool.Get().(*bufio.Reader)
	u.br.Reset(&u.tc)
	u.bw = writerPool.Get().(*bufio.Writer)
	u.bw.Reset(&u.tc)
	return u, nil
}

// clean reports whether nothing has arrived on an idle connection: no byte (an unsolicited
// response such as a 408 an app sends before it closes an idle connection, or the rest of a
// body that a HEAD or 204 response should not have had) and no end of stream. It peeks at the
// socket without blocking and without consuming.
func (u *upConn) clean() bool {
	if u.br.Buffered() > 0 {
		return false
	}
	var b [1]byte
	clean := false
	err := u.rc.Read(func(fd uintptr) bool {
		_, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		clean = rerr == unix.EAGAIN
		return true
	})
	return err == nil && clean
}

// close closes the connection and gives its buffers back.
func (u *upConn) close() {
	u.c.Close()
	u.br.Reset(nil)
	readerPool.Put(u.br)
	u.bw.Reset(nil)
	writerPool.Put(u.bw)
	u.br, u.bw = nil, nil
}

// poolKey separates destinations and directions (inbound connections have another source).
type poolKey struct {
	dst netip.AddrPort
	dir Direction
}

// pool keeps idle upstream connections per destination, most recently used first.
type pool struct {
	mu      sync.Mutex
	idleBy  map[poolKey][]*upConn
	maxIdle int
	maxAge  time.Duration
	closed  bool
}

func newPool(maxIdle int, maxAge time.Duration) *pool {
	return &pool{idleBy: map[poolKey][]*upConn{}, maxIdle: maxIdle, maxAge: maxAge}
}

// get returns an idle connection to key that has not been idle too long, or nil.
func (p *pool) get(key poolKey) *upConn {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idleBy[key]
	for len(list) > 0 {
		u := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if now.Sub(u.idleAt) < p.maxAge {
			p.idleBy[key] = list
			return u
		}
		u.close()
	}
	delete(p.idleBy, key)
	return nil
}

// put keeps u for reuse, or closes it when the pool for its key is full or closed.
func (p *pool) put(u *upConn) {
	// No deadline while idle: clean() must be able to look at the socket however long
	// the connection waited.
	u.tc.setReadDeadline(time.Time{})
	u.idleAt = time.Now()
	u.reused = true
	p.mu.Lock()
	list := p.idleBy[u.key]
	if p.closed || len(list) >= p.maxIdle {
		p.mu.Unlock()
		u.close()
		return
	}
	p.idleBy[u.key] = append(list, u)
	p.mu.Unlock()
}

func (p *pool) idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.idleBy {
		n += len(l)
	}
	return n
}

// reap closes connections idle for longer than maxAge.
func (p *pool) reap() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, list := range p.idleBy {
		keep := list[:0]
		for _, u := range list {
			if now.Sub(u.idleAt) >= p.maxAge {
				u.close()
			} else {
				keep = append(keep, u)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(p.idleBy, k)
		} else {
			p.idleBy[k] = keep
		}
	}
}

// janitor reaps the pool periodically until the returned function is called.
func (p *pool) janitor() (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(p.maxAge / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.reap()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

func (p *pool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for k, list := range p.idleBy {
		for _, u := range list {
			u.close()
		}
		delete(p.idleBy, k)
	}
}
