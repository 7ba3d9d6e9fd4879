package proxy

import (
	"bufio"
	"net"
	"net/netip"
	"sync"
	"time"
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
	br     *bufio.Reader
	bw     *bufio.Writer
	key    poolKey
	idleAt time.Time
	reused bool // has carried a request before
}

func newUpConn(c *net.TCPConn, key poolKey) *upConn {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c)
	return &upConn{c: c, br: br, bw: bw, key: key}
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
