package repair

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// FindNetnsByIP looks for the network namespace that holds one of ips: it scans
// procRoot/<pid>/ns/net of every process (the agent runs with hostPID), visits each distinct
// namespace other than the agent's own once, lists its interface addresses through a netlink
// socket opened inside it (no thread switches namespace) and returns the
// procRoot/<pid>/ns/net path of the first namespace with a matching address.
func FindNetnsByIP(procRoot string, ips []string) (string, error) {
	want := map[netip.Addr]bool{}
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return "", fmt.Errorf("pod IP %q: %w", s, err)
		}
		want[a.Unmap()] = true
	}
	if len(want) == 0 {
		return "", fmt.Errorf("find netns: the pod has no IP yet")
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return "", fmt.Errorf("find netns: %w", err)
	}
	type nsID struct{ dev, ino uint64 }
	seen := map[nsID]bool{}
	if self, err := os.Stat(filepath.Join(procRoot, "self", "ns", "net")); err == nil {
		if st, ok := self.Sys().(*syscall.Stat_t); ok {
			seen[nsID{uint64(st.Dev), st.Ino}] = true
		}
	}
	visited := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		path := filepath.Join(procRoot, e.Name(), "ns", "net")
		fi, err := os.Stat(path)
		if err != nil {
			continue // the process exited, or a kernel thread
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		id := nsID{uint64(st.Dev), st.Ino}
		if seen[id] {
			continue
		}
		seen[id] = true
		visited++
		if has, err := netnsHasAddr(path, want); err == nil && has {
			return path, nil
		}
	}
	return "", fmt.Errorf("find netns: no network namespace among %d visited under %s has address %v", visited, procRoot, ips)
}

func netnsHasAddr(path string, want map[netip.Addr]bool) (bool, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return false, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return false, err
	}
	defer nl.Close()
	addrs, err := nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && want[ip.Unmap()] {
			return true, nil
		}
	}
	return false, nil
}
