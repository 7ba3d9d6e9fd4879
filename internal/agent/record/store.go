// Package record is the node agent's record of the pods on its node: what the CNI plugin
// reported for each of them (netns, backend, settings, applied rules, state) and what the agent
// learnt since (missing, drifted, repaired). The record is kept in memory and persisted
// atomically to one JSON file, so that it survives an agent restart; it is bounded in size.
// While the agent runs the file is written behind the changes (WriteBehind): a change is
// answered as soon as it is in memory, and the changes of a short window go to disk in one
// write.
//
// The package takes plain values: the informer side turns Kubernetes pods into PodInfo.
package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/atomicfile"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/selection"
)

// FileName is the name of the record file in the state directory. It must never change: a new
// agent reads what an older one wrote.
const FileName = "pods.json"

// DefaultMaxRecords bounds the record; beyond it the least recently updated records go first.
const DefaultMaxRecords = 4096

// Bounds of what one record stores (a report is refused beyond them, except the reason, which
// is cut): the record file and the report latency stay bounded whatever a client sends.
const (
	maxReason     = 1024 // reason text, cut beyond
	maxIdentifier = 256  // uid, container ID, netns path, backend name
	maxPodIPs     = 16
	maxIP         = 64
	maxRules      = 512
	maxRule       = 1024
	maxSettings   = 8 << 10 // JSON size of the redirect settings
)

// Record is one pod's record: the API view plus what the agent needs to inspect and repair.
type Record struct {
	agentapi.PodRecord
	// Rules is the canonical listing of the rules the plugin (or a repair) applied.
	Rules []string `json:"rules,omitempty"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
	// ProblemSince is when the agent first found the rules missing or drifted (zero while the
	// pod is fine).
	ProblemSince time.Time `json:"problemSince,omitempty"`
}

// Key returns "namespace/name".
func Key(namespace, name string) string { return namespace + "/" + name }

// PodInfo is what the agent knows about a pod from the API server.
type PodInfo struct {
	Namespace, Name, UID string
	PodIPs               []string
	// Injected is true for a pod that must be captured (docs/design.md "Pod selection").
	Injected bool
	// Running is true once the pod has a sandbox with an IP (phase Running or Pending with IPs).
	Running bool
	// Settings are the pod's redirect settings from its annotations; SettingsErr says why they
	// are invalid (then Settings is nil).
	Settings    *redirect.Settings
	SettingsErr string
	// Repair is the pod's sidelane.io/repair annotation ("" when absent): the repair mode for
	// this pod instead of the agent's.
	Repair string
}

// Store is the record. Its methods are safe for concurrent use.
type Store struct {
	path string
	max  int
	now  func() time.Time

	mu   sync.Mutex
	pods map[string]*Record
	// writeBehind is set between WriteBehind and its stop: a change marks the record dirty
	// and kicks the writer instead of writing the file.
	writeBehind bool
	dirty       bool
	kick        chan struct{}
	// writes counts the files written (tests).
	writes atomic.Int64
}

// fileFormat is the on-disk form.
type fileFormat struct {
	Version int       `json:"version"`
	Pods    []*Record `json:"pods"`
}

// Open loads the record from dir (created 0700 if absent). A missing file is an empty record;
// an unreadable one is an error that names the file. max <= 0 means DefaultMaxRecords.
func Open(dir string, max int) (*Store, error) {
	if max <= 0 {
		max = DefaultMaxRecords
	}
	s := &Store{max: max, now: time.Now, pods: map[string]*Record{}}
	if dir == "" {
		return s, nil // in memory only
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("record state dir: %w", err)
	}
	s.path = filepath.Join(dir, FileName)
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read record: %w", err)
	}
	var f fileFormat
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("record file %s: %w", s.path, err)
	}
	for _, r := range f.Pods {
		if r == nil || r.Namespace == "" || r.Name == "" {
			continue
		}
		s.pods[Key(r.Namespace, r.Name)] = r
	}
	return s, nil
}

// SetClock replaces the clock (tests).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// Get returns a copy of the record of namespace/name.
func (s *Store) Get(namespace, name string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.pods[Key(namespace, name)]
	if !ok {
		return Record{}, false
	}
	return clone(r), true
}

// List returns copies of every record, sorted by namespace and name.
func (s *Store) List() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.pods))
	for _, r := range s.pods {
		out = append(out, clone(r))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// ApplyReport records a report of the plugin. ADD and CHECK replace what the record says about
// the pod's sandbox; DEL forgets the pod when it is about the sandbox the record knows (a DEL
// of an older sandbox does not remove the newer one's record).
func (s *Store) ApplyReport(rep agentapi.Report) error {
	if rep.Namespace == "" || rep.Name == "" {
		return fmt.Errorf("report: namespace and name are required (got %q/%q)", rep.Namespace, rep.Name)
	}
	if err := validateReport(rep); err != nil {
		return err
	}
	switch rep.Event {
	case agentapi.EventAdd, agentapi.EventCheck, agentapi.EventDel:
	default:
		return fmt.Errorf("report for %s/%s: unknown event %q (want ADD, CHECK or DEL)", rep.Namespace, rep.Name, rep.Event)
	}
	if rep.Event != agentapi.EventDel {
		switch rep.State {
		case agentapi.StateCaptured, agentapi.StateSkipped, agentapi.StateFailed, agentapi.StateMissing, agentapi.StateDrifted:
		default:
			return fmt.Errorf("report for %s/%s: unknown state %q", rep.Namespace, rep.Name, rep.State)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := Key(rep.Namespace, rep.Name)
	old := s.pods[key]
	if rep.Event == agentapi.EventDel {
		if old != nil && (old.ContainerID == "" || rep.ContainerID == "" || old.ContainerID == rep.ContainerID) {
			delete(s.pods, key)
			return s.saveLocked()
		}
		return nil
	}
	now := s.now()
	r := &Record{Updated: now}
	if old != nil && (rep.UID == "" || old.UID == rep.UID) {
		*r = clone(old)
		r.Updated = now
	}
	r.Namespace, r.Name = rep.Namespace, rep.Name
	if rep.UID != "" {
		r.UID = rep.UID
	}
	if rep.ContainerID != "" {
		r.ContainerID = rep.ContainerID
	}
	if rep.Netns != "" {
		r.Netns = rep.Netns
	}
	if len(rep.PodIPs) > 0 {
		r.PodIPs = slices.Clone(rep.PodIPs)
	}
	r.State = rep.State
	r.Reason = truncate(rep.Reason)
	if rep.Backend != "" {
		r.Backend = rep.Backend
	}
	if rep.Settings != nil {
		st := *rep.Settings
		r.Settings = &st
	}
	if rep.State == agentapi.StateCaptured {
		if len(rep.Rules) > 0 {
			r.Rules = slices.Clone(rep.Rules)
		}
		r.LastApplied = rep.Time
		if r.LastApplied.IsZero() {
			r.LastApplied = now
		}
	}
	s.pods[key] = r
	s.boundLocked()
	return s.saveLocked()
}

// Update changes the record of namespace/name with fn (which may create it: a zero Record with
// namespace and name set is passed when there is none) and persists it.
func (s *Store) Update(namespace, name string, fn func(r *Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := Key(namespace, name)
	r, ok := s.pods[key]
	if !ok {
		r = &Record{PodRecord: agentapi.PodRecord{Namespace: namespace, Name: name}}
	}
	c := clone(r)
	fn(&c)
	c.Namespace, c.Name = namespace, name
	c.Reason = truncate(c.Reason)
	c.Updated = s.now()
	s.pods[key] = &c
	s.boundLocked()
	return s.saveLocked()
}

// Delete forgets namespace/name.
func (s *Store) Delete(namespace, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := Key(namespace, name)
	if _, ok := s.pods[key]; !ok {
		return nil
	}
	delete(s.pods, key)
	return s.saveLocked()
}

// Observe aligns the record with one pod seen by the informer: a record of an older pod of the
// same name (another UID) is dropped, and an injected running pod without any record gets one
// in state missing. It returns the resulting record, if any.
func (s *Store) Observe(p PodInfo) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, err := s.observeLocked(p)
	if err == nil && changed {
		err = s.saveLocked()
	}
	r, ok := s.pods[Key(p.Namespace, p.Name)]
	if !ok {
		return Record{}, false, err
	}
	return clone(r), true, err
}

func (s *Store) observeLocked(p PodInfo) (bool, error) {
	key := Key(p.Namespace, p.Name)
	changed := false
	r, ok := s.pods[key]
	if ok && p.UID != "" && r.UID != "" && r.UID != p.UID {
		delete(s.pods, key)
		ok, changed = false, true
	}
	if ok {
		if r.UID == "" && p.UID != "" {
			r.UID = p.UID
			changed = true
		}
		if len(r.PodIPs) == 0 && len(p.PodIPs) > 0 {
			r.PodIPs = slices.Clone(p.PodIPs)
			changed = true
		}
		return changed, nil
	}
	if p.Injected && p.Running {
		s.pods[key] = &Record{
			PodRecord: agentapi.PodRecord{
				Namespace: p.Namespace, Name: p.Name, UID: p.UID, PodIPs: slices.Clone(p.PodIPs),
				State:    agentapi.StateMissing,
				Reason:   "injected pod without a report from the CNI plugin (created before the plugin was installed?)",
				Settings: p.Settings,
			},
			Updated: s.now(),
		}
		s.boundLocked()
		return true, nil
	}
	return changed, nil
}

// Sync aligns the record with the complete list of the node's pods (after the informer synced):
// records of pods that no longer exist are dropped, and every pod is observed.
func (s *Store) Sync(pods []PodInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make(map[string]bool, len(pods))
	changed := false
	for _, p := range pods {
		live[Key(p.Namespace, p.Name)] = true
		c, _ := s.observeLocked(p)
		changed = changed || c
	}
	for key := range s.pods {
		if !live[key] {
			delete(s.pods, key)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return s.saveLocked()
}

// PodDeleted drops the record of a deleted pod (uid "" matches any).
func (s *Store) PodDeleted(namespace, name, uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := Key(namespace, name)
	r, ok := s.pods[key]
	if !ok || (uid != "" && r.UID != "" && r.UID != uid) {
		return nil
	}
	delete(s.pods, key)
	return s.saveLocked()
}

// boundLocked drops the least recently updated records beyond the bound.
func (s *Store) boundLocked() {
	if len(s.pods) <= s.max {
		return
	}
	all := make([]*Record, 0, len(s.pods))
	for _, r := range s.pods {
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Updated.Before(all[j].Updated) })
	for _, r := range all[:len(all)-s.max] {
		delete(s.pods, Key(r.Namespace, r.Name))
	}
}

// DefaultWriteDelay bounds how long a change of the record may wait to be on disk while the
// record is written behind (WriteBehind); the changes within it go in one write.
const DefaultWriteDelay = 200 * time.Millisecond

// WriteBehind makes the record's changes return once they are in memory; one goroutine writes
// the file at most delay after a change, with every change made since in one write. A failed
// write goes to onErr (may be nil) and is retried after the next delay. stop ends it: it writes
// what is not on disk yet, waits for that and returns its error; changes after stop are written
// as they are made again. One WriteBehind at a time.
//
// What the agent loses in a crash is therefore at most the last delay of changes, which its pod
// informer and the repairer's netns inspection rebuild (a pod without a record is observed as
// missing and then verified or repaired in its netns).
func (s *Store) WriteBehind(delay time.Duration, onErr func(error)) (stop func() error) {
	if s.path == "" {
		return func() error { return nil }
	}
	s.mu.Lock()
	s.writeBehind, s.kick = true, make(chan struct{}, 1)
	kick := s.kick
	s.mu.Unlock()
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-kick:
			}
			t := time.NewTimer(delay)
			select {
			case <-done:
				t.Stop()
				return
			case <-t.C:
			}
			if err := s.flush(); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}()
	return func() error {
		close(done)
		<-exited
		s.mu.Lock()
		defer s.mu.Unlock()
		s.writeBehind = false
		if !s.dirty {
			return nil
		}
		return s.writeLocked()
	}
}

// flush writes the record when it has changes not on disk yet; the file is written outside
// the lock (only the write-behind goroutine writes while it runs). A failed write leaves the
// record dirty and kicks another try.
func (s *Store) flush() error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	data, err := s.encodeLocked()
	s.dirty = false
	s.mu.Unlock()
	if err == nil {
		err = s.write(data)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true
		s.kickLocked()
		s.mu.Unlock()
	}
	return err
}

func (s *Store) kickLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// saveLocked persists a change: at once (atomically: a temporary file in the same directory,
// synced, then renamed over the old one), or, while the record is written behind, by marking
// it dirty for the writer.
func (s *Store) saveLocked() error {
	if s.path == "" {
		return nil
	}
	if s.writeBehind {
		s.dirty = true
		s.kickLocked()
		return nil
	}
	return s.writeLocked()
}

func (s *Store) writeLocked() error {
	data, err := s.encodeLocked()
	if err != nil {
		return err
	}
	if err := s.write(data); err != nil {
		return err
	}
	s.dirty = false
	return nil
}

func (s *Store) encodeLocked() ([]byte, error) {
	f := fileFormat{Version: 1, Pods: make([]*Record, 0, len(s.pods))}
	for _, r := range s.pods {
		f.Pods = append(f.Pods, r)
	}
	sort.Slice(f.Pods, func(i, j int) bool {
		return Key(f.Pods[i].Namespace, f.Pods[i].Name) < Key(f.Pods[j].Namespace, f.Pods[j].Name)
	})
	data, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return data, nil
}

func (s *Store) write(data []byte) error {
	if err := atomicfile.Write(s.path, data, 0o600); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	s.writes.Add(1)
	return nil
}

func clone(r *Record) Record {
	c := *r
	c.PodIPs = slices.Clone(r.PodIPs)
	c.Rules = slices.Clone(r.Rules)
	if r.Settings != nil {
		st := *r.Settings
		c.Settings = &st
	}
	return c
}

// validateReport refuses names that are not Kubernetes names (the record key joins them with
// "/", which neither may contain) and values beyond the record's bounds.
func validateReport(rep agentapi.Report) error {
	if err := selection.CheckNamespaceName(rep.Namespace); err != nil {
		return fmt.Errorf("report: namespace %q is not a namespace name: %w", cut(rep.Namespace), err)
	}
	if errs := validation.IsDNS1123Subdomain(rep.Name); len(errs) > 0 {
		return fmt.Errorf("report: name %q is not a pod name: %s", cut(rep.Name), strings.Join(errs, "; "))
	}
	for _, f := range []struct{ field, value string }{
		{"uid", rep.UID}, {"containerID", rep.ContainerID}, {"netns", rep.Netns}, {"ifName", rep.IfName},
		{"backend", rep.Backend}, {"event", rep.Event}, {"state", rep.State},
	} {
		if len(f.value) > maxIdentifier {
			return fmt.Errorf("report for %s/%s: field %q is %d bytes long, at most %d allowed", rep.Namespace, rep.Name, f.field, len(f.value), maxIdentifier)
		}
	}
	if len(rep.PodIPs) > maxPodIPs {
		return fmt.Errorf("report for %s/%s: %d pod IPs, at most %d allowed", rep.Namespace, rep.Name, len(rep.PodIPs), maxPodIPs)
	}
	for _, ip := range rep.PodIPs {
		if len(ip) > maxIP {
			return fmt.Errorf("report for %s/%s: pod IP %q is too long", rep.Namespace, rep.Name, cut(ip))
		}
	}
	if len(rep.Rules) > maxRules {
		return fmt.Errorf("report for %s/%s: %d rules, at most %d allowed", rep.Namespace, rep.Name, len(rep.Rules), maxRules)
	}
	for _, r := range rep.Rules {
		if len(r) > maxRule {
			return fmt.Errorf("report for %s/%s: a rule of %d bytes, at most %d allowed", rep.Namespace, rep.Name, len(r), maxRule)
		}
	}
	if rep.Settings != nil {
		if b, err := json.Marshal(rep.Settings); err != nil || len(b) > maxSettings {
			return fmt.Errorf("report for %s/%s: redirect settings larger than %d bytes", rep.Namespace, rep.Name, maxSettings)
		}
	}
	return nil
}

// cut shortens a refused value for an error message.
func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func truncate(s string) string {
	if len(s) > maxReason {
		return s[:maxReason] + "…"
	}
	return s
}
