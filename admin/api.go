package admin

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"hookproxy/buffer"
)

// Paging of the list routes.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Target is one target as the API shows it.
type Target struct {
	ID           uint64 `json:"id"`
	URL          string `json:"url"`
	PendingHooks int    `json:"pending_hooks"`
	PendingBytes int64  `json:"pending_bytes"`
	// Oldest is the arrival of the oldest pending hook, and
	// OldestAgeSeconds its age when the answer was made (0: none).
	Oldest           time.Time `json:"oldest,omitzero"`
	OldestAgeSeconds float64   `json:"oldest_age_seconds"`
	// InFlight is the batch claimed for delivery (nil: none). Attempts,
	// NextAttempt and the Last fields are its.
	InFlight *InFlight `json:"in_flight,omitempty"`
	Attempts int       `json:"attempts"`
	// NextAttempt is when the batch in flight is tried again, and
	// NextAttemptInSeconds how long from the answer that is (negative:
	// overdue; nil: no attempt scheduled).
	NextAttempt          time.Time `json:"next_attempt,omitzero"`
	NextAttemptInSeconds *float64  `json:"next_attempt_in_seconds,omitempty"`
	LastAttempt          time.Time `json:"last_attempt,omitzero"`
	LastStatus           int       `json:"last_status,omitempty"`
	LastError            string    `json:"last_error,omitempty"`
	// Gone is set when the receiver answered 410 Gone and nobody cleared
	// it since (POST /api/targets/{id}/clear-gone).
	Gone bool `json:"gone"`
}

// InFlight is a target's batch claimed for delivery.
type InFlight struct {
	BatchID string    `json:"batch_id"`
	Hooks   int       `json:"hooks"`
	Bytes   int64     `json:"bytes"`
	Created time.Time `json:"created"`
}

// TargetList is a page of targets.
type TargetList struct {
	Targets []Target `json:"targets"`
	// Total is how many targets there are in all pages.
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// DeadLetter is a dead letter without its bodies.
type DeadLetter struct {
	ID       string `json:"id"`
	TargetID uint64 `json:"target_id"`
	Target   string `json:"target"`
	// Reason is the sender's cause: "retries-exhausted", "status", ...
	Reason       string    `json:"reason"`
	Detail       string    `json:"detail,omitempty"`
	Attempts     int       `json:"attempts"`
	LastStatus   int       `json:"last_status,omitempty"`
	FirstAttempt time.Time `json:"first_attempt,omitzero"`
	LastAttempt  time.Time `json:"last_attempt,omitzero"`
	Created      time.Time `json:"created,omitzero"`
	GivenUp      time.Time `json:"given_up,omitzero"`
	HookCount    int       `json:"hook_count"`
	HookIDs      []string  `json:"hook_ids"`
	// BodyBytes is the sum of the hook body sizes.
	BodyBytes int64 `json:"body_bytes"`
}

// DeadLetterList is a page of dead letters.
type DeadLetterList struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	Total       int          `json:"total"`
	Offset      int          `json:"offset"`
	Limit       int          `json:"limit"`
}

// DeadLetterDetail is a dead letter with its hooks.
type DeadLetterDetail struct {
	DeadLetter
	Hooks []Hook `json:"hooks"`
}

// Hook is one hook of a dead letter, body included.
type Hook struct {
	ID       string    `json:"id"`
	Method   string    `json:"method,omitempty"`
	Received time.Time `json:"received"`
	// Header holds the hook's headers; credentials are redacted.
	Header http.Header `json:"header,omitempty"`
	// Body is the body as the app sent it when it is UTF-8 text (JSON
	// is); otherwise it is in BodyBase64.
	Body       string `json:"body,omitempty"`
	BodyBase64 []byte `json:"body_base64,omitempty"`
	BodyBytes  int64  `json:"body_bytes"`
}

// Selector chooses dead letters for replay and purge: exactly one of All,
// Target, TargetID and IDs; Reason narrows All, Target and TargetID.
type Selector struct {
	All      bool     `json:"all,omitempty"`
	Target   string   `json:"target,omitempty"`
	TargetID uint64   `json:"target_id,omitempty"`
	IDs      []string `json:"ids,omitempty"`
	Reason   string   `json:"reason,omitempty"`
}

// Validate reports a selector that selects nothing on purpose or is
// ambiguous: an empty one is refused, so that "all" is always explicit.
func (sel Selector) Validate() error {
	n := 0
	for _, set := range []bool{sel.All, sel.Target != "", sel.TargetID != 0, len(sel.IDs) > 0} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return errors.New("select dead letters: all, target, target_id or ids")
	case n > 1:
		return errors.New("select dead letters by one of all, target, target_id or ids, not several")
	case len(sel.IDs) > 0 && sel.Reason != "":
		return errors.New("reason narrows all, target or target_id, not ids")
	}
	for _, id := range sel.IDs {
		if id == "" {
			return errors.New("empty dead letter id")
		}
	}
	return nil
}

// Query is the selector as query parameters: all=true, target=,
// target_id=, id= (repeated), reason=.
func (sel Selector) Query() url.Values {
	q := url.Values{}
	if sel.All {
		q.Set("all", "true")
	}
	if sel.Target != "" {
		q.Set("target", sel.Target)
	}
	if sel.TargetID != 0 {
		q.Set("target_id", strconv.FormatUint(sel.TargetID, 10))
	}
	for _, id := range sel.IDs {
		q.Add("id", id)
	}
	if sel.Reason != "" {
		q.Set("reason", sel.Reason)
	}
	return q
}

// selectorParams are the query parameters of a selector.
var selectorParams = []string{"all", "target", "target_id", "id", "reason"}

// selectorFromQuery is the inverse of Selector.Query. A parameter it does
// not know is refused, as an unknown field of a JSON selector is: a
// misspelt filter (ids= for id=, reasn=) would otherwise be dropped, and
// the replay or purge would reach more than was asked for.
func selectorFromQuery(q url.Values) (Selector, error) {
	var sel Selector
	if err := knownParams(q, "a selector", selectorParams); err != nil {
		return sel, err
	}
	if v := q.Get("all"); v != "" {
		all, err := strconv.ParseBool(v)
		if err != nil {
			return sel, fmt.Errorf("all=%q is not a boolean", v)
		}
		sel.All = all
	}
	sel.Target = q.Get("target")
	if v := q.Get("target_id"); v != "" {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil || id == 0 {
			return sel, fmt.Errorf("target_id=%q is not a target id", v)
		}
		sel.TargetID = id
	}
	for _, v := range q["id"] {
		for id := range strings.SplitSeq(v, ",") {
			sel.IDs = append(sel.IDs, strings.TrimSpace(id))
		}
	}
	sel.Reason = q.Get("reason")
	return sel, nil
}

// knownParams refuses a query parameter that is not one of known, which
// what (such as "a selector") takes.
func knownParams(q url.Values, what string, known []string) error {
	for name := range q {
		if !slices.Contains(known, name) {
			return fmt.Errorf("unknown parameter %q (%s takes %s)", name, what, strings.Join(known, ", "))
		}
	}
	return nil
}

func (sel Selector) kind() string {
	switch {
	case sel.All:
		return "all"
	case sel.Target != "":
		return "target"
	case sel.TargetID != 0:
		return "target_id"
	default:
		return "ids"
	}
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	// DeadLetters is how many dead letters went back (IDs lists them),
	// Hooks how many hooks they held.
	DeadLetters int      `json:"dead_letters"`
	Hooks       int      `json:"hooks"`
	IDs         []string `json:"ids"`
	// NotFound lists the ids asked for that are not dead letters, and
	// those selected that were gone by the replay's turn (purged or
	// replayed meanwhile).
	NotFound []string `json:"not_found,omitempty"`
	// Unreadable lists the dead letters selected that cannot be replayed:
	// reason unreadable, their hooks' bodies are lost. They stay until
	// purged; the others selected with them are replayed all the same.
	Unreadable []string `json:"unreadable,omitempty"`
}

// PurgeResult says what a purge did.
type PurgeResult struct {
	DeadLetters int      `json:"dead_letters"`
	IDs         []string `json:"ids"`
	NotFound    []string `json:"not_found,omitempty"`
}

// Status is the summary of /api/status.
type Status struct {
	Version          string   `json:"version"`
	Ready            bool     `json:"ready"`
	Reasons          []Reason `json:"reasons"` // [] when ready, never null
	Draining         bool     `json:"draining"`
	PendingHooks     int      `json:"pending_hooks"`
	PendingBytes     int64    `json:"pending_bytes"`
	PendingTargets   int      `json:"pending_targets"`
	OldestAgeSeconds float64  `json:"oldest_age_seconds"`
	// OverdueSeconds is how long the most overdue batch has waited past
	// its due time.
	OverdueSeconds  float64 `json:"overdue_seconds"`
	MaxPendingBytes int64   `json:"max_pending_bytes,omitempty"`
	DeadLetters     int     `json:"dead_letters"`
	DeadLetterHooks int     `json:"dead_letter_hooks"`
	GoneTargets     int     `json:"gone_targets"`
	// DiskBytes is what the store takes on disk (0: not known).
	DiskBytes int64 `json:"disk_bytes,omitempty"`
}

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Message string `json:"message"`
	Status  int    `json:"status"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Message: msg, Status: code})
}

// storeError answers a store error: 404 for what is not there, 503 for a
// closed store, 500 (logged) for anything else.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, buffer.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, buffer.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.log.Error("admin request", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// paging reads limit and offset.
func paging(q url.Values) (limit, offset int, err error) {
	limit, offset = DefaultLimit, 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > MaxLimit {
			return 0, 0, fmt.Errorf("limit=%q: want 1 to %d", v, MaxLimit)
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, fmt.Errorf("offset=%q: want 0 or more", v)
		}
	}
	return limit, offset, nil
}

func page[T any](all []T, limit, offset int) []T {
	if offset >= len(all) {
		return []T{}
	}
	return all[offset:min(offset+limit, len(all))]
}

func targetID(r *http.Request) (buffer.TargetID, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%q is not a target id", v)
	}
	return buffer.TargetID(id), nil
}

func (s *Server) target(st buffer.TargetStatus, now time.Time) Target {
	t := Target{
		ID:               uint64(st.ID),
		URL:              st.URL,
		PendingHooks:     st.Pending,
		PendingBytes:     st.PendingBytes,
		Oldest:           st.Oldest,
		OldestAgeSeconds: ageSeconds(st.Oldest, now),
		Gone:             st.Gone,
	}
	if b := st.InFlight; b != nil {
		t.InFlight = &InFlight{BatchID: b.ID, Hooks: b.Size, Bytes: b.Bytes, Created: b.Created}
		t.Attempts = b.Attempts
		t.LastAttempt = b.LastAttempt
		t.LastStatus = b.LastStatus
		t.LastError = b.LastError
		if !b.NextAttempt.IsZero() {
			t.NextAttempt = b.NextAttempt
			in := b.NextAttempt.Sub(now).Seconds()
			t.NextAttemptInSeconds = &in
		}
	}
	return t
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	p := s.probe(now)
	rd := Evaluate(p, s.policy)
	st := s.store.Stats()
	out := Status{
		Version:          s.version,
		Ready:            rd.Ready,
		Reasons:          rd.Reasons,
		Draining:         p.Draining,
		PendingHooks:     st.PendingHooks,
		PendingBytes:     st.PendingBytes,
		PendingTargets:   st.PendingTargets,
		OldestAgeSeconds: ageSeconds(st.Oldest, now),
		OverdueSeconds:   p.Overdue.Seconds(),
		MaxPendingBytes:  s.policy.MaxPendingBytes,
	}
	dead, err := s.store.DeadLetterTotals()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out.DeadLetters, out.DeadLetterHooks = dead.Letters, dead.Hooks
	targets, err := s.store.Targets()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	for i := range targets {
		if targets[i].Gone {
			out.GoneTargets++
		}
	}
	if s.diskUsage != nil {
		lsm, vlog := s.diskUsage()
		out.DiskBytes = lsm + vlog
	}
	writeJSON(w, http.StatusOK, out)
}

// targetListParams and deadLetterListParams are the query parameters of
// the lists. Another is refused, as by a replay or purge: a misspelt
// filter (reasn=, or DELETE's id=) would otherwise be dropped and the
// whole list answered as if it were the selection.
var (
	targetListParams     = []string{"sort", "order", "limit", "offset"}
	deadLetterListParams = []string{"target", "target_id", "reason", "limit", "offset"}
)

func (s *Server) listTargets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := knownParams(q, "the list", targetListParams); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit, offset, err := paging(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Each order has the direction an operator looks for first: the
	// biggest backlog, the longest wait, the first target.
	sortBy, desc := q.Get("sort"), true
	switch sortBy {
	case "", "pending":
		sortBy = "pending"
	case "age":
	case "id":
		desc = false
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("sort=%q: want pending, age or id", sortBy))
		return
	}
	switch o := q.Get("order"); o {
	case "":
	case "asc":
		desc = false
	case "desc":
		desc = true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("order=%q: want asc or desc", o))
		return
	}
	sts, err := s.store.Targets()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	now := s.now()
	all := make([]Target, len(sts))
	for i := range sts {
		all[i] = s.target(sts[i], now)
	}
	slices.SortFunc(all, func(a, b Target) int {
		var c int
		switch sortBy {
		case "pending":
			c = cmp.Or(cmp.Compare(a.PendingHooks, b.PendingHooks), cmp.Compare(a.PendingBytes, b.PendingBytes))
		case "age":
			c = cmp.Compare(a.OldestAgeSeconds, b.OldestAgeSeconds)
		}
		if desc {
			c = -c
		}
		if c == 0 {
			c = cmp.Compare(a.ID, b.ID)
			if desc && sortBy == "id" {
				c = -c
			}
		}
		return c
	})
	writeJSON(w, http.StatusOK, TargetList{Targets: page(all, limit, offset), Total: len(all), Offset: offset, Limit: limit})
}

func (s *Server) getTarget(w http.ResponseWriter, r *http.Request) {
	id, err := targetID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := s.store.Target(id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.target(st, s.now()))
}

func (s *Server) clearGone(w http.ResponseWriter, r *http.Request) {
	id, err := targetID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := s.store.SetGone(id, false)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("target gone mark cleared", "target_id", uint64(id))
	if s.onChange != nil {
		s.onChange(st)
	}
	writeJSON(w, http.StatusOK, s.target(st, s.now()))
}

func deadLetter(d *buffer.DeadLetter) DeadLetter {
	out := DeadLetter{
		ID: d.ID, TargetID: uint64(d.TargetID), Target: d.Target, Reason: d.Reason, Detail: d.Detail,
		Attempts: d.Attempts, LastStatus: d.LastStatus, FirstAttempt: d.FirstAttempt, LastAttempt: d.LastAttempt,
		Created: d.Created, GivenUp: d.GivenUp, HookCount: d.Size, BodyBytes: d.Bytes,
		HookIDs: make([]string, len(d.Hooks)),
	}
	for i := range d.Hooks {
		out.HookIDs[i] = d.Hooks[i].ID
	}
	return out
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := knownParams(q, "the list", deadLetterListParams); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit, offset, err := paging(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var tid uint64
	if v := q.Get("target_id"); v != "" {
		if tid, err = strconv.ParseUint(v, 10, 64); err != nil || tid == 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("target_id=%q is not a target id", v))
			return
		}
	}
	f := buffer.DeadLetterFilter{Target: q.Get("target"), TargetID: buffer.TargetID(tid), Reason: q.Get("reason")}
	page, total, err := s.store.DeadLetterPage(f, offset, limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	list := DeadLetterList{DeadLetters: make([]DeadLetter, 0, len(page)), Total: total, Offset: offset, Limit: limit}
	for i := range page {
		list.DeadLetters = append(list.DeadLetters, deadLetter(&page[i]))
	}
	writeJSON(w, http.StatusOK, list)
}

// credentialWords mark the headers whose values the API never shows: a
// header whose lower-case name contains one of them.
var credentialWords = []string{"auth", "token", "key", "secret", "passw", "cookie", "session", "sign", "hmac", "jwt", "credential"}

// credentialHeader reports whether the header named k carries a
// credential (Idempotency-Key, a delivery id, is not one).
func credentialHeader(k string) bool {
	k = strings.ToLower(k)
	if k == "idempotency-key" {
		return false
	}
	for _, w := range credentialWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func (s *Server) getDeadLetter(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") == "replay" {
		// The route of POST /api/dead-letters/replay, not a dead letter
		// (whose ids are batch ids).
		w.Header().Set("Allow", http.MethodPost)
		methodNotAllowed(w, r)
		return
	}
	d, err := s.store.GetDeadLetter(r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := DeadLetterDetail{DeadLetter: deadLetter(&d), Hooks: make([]Hook, len(d.Hooks))}
	for i := range d.Hooks {
		h := &d.Hooks[i]
		o := Hook{ID: h.ID, Method: h.Method, Received: h.Received, BodyBytes: h.Size()}
		if len(h.Header) > 0 {
			o.Header = h.Header.Clone()
			for k := range o.Header {
				if credentialHeader(k) {
					o.Header[k] = []string{"[redacted]"}
				}
			}
		}
		if utf8.Valid(h.Body) {
			o.Body = string(h.Body)
		} else {
			o.BodyBase64 = h.Body
		}
		out.Hooks[i] = o
	}
	writeJSON(w, http.StatusOK, out)
}

// maxSelectorBody bounds the JSON body of a replay.
const maxSelectorBody = 1 << 20

// selector reads the selector of a replay or purge: from the query, or
// from a JSON body (replay). A purge's body is refused, not dropped: a
// selector there (as a replay takes it) would otherwise be ignored, and
// the query's selection purged in its place.
func selector(r *http.Request) (Selector, error) {
	sel, err := selectorFromQuery(r.URL.Query())
	if err != nil {
		return sel, err
	}
	if r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxSelectorBody+1))
		if err != nil {
			return sel, fmt.Errorf("read body: %w", err)
		}
		if len(b) > maxSelectorBody {
			return sel, errors.New("body too large")
		}
		if len(strings.TrimSpace(string(b))) > 0 {
			if r.Method != http.MethodPost {
				return sel, fmt.Errorf("%s takes its selector as query parameters (all=true, target=, target_id=, id=, reason=), not in a body", r.Method)
			}
			if len(r.URL.Query()) > 0 {
				return sel, errors.New("select by query parameters or by a JSON body, not both")
			}
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&sel); err != nil {
				return sel, fmt.Errorf("selector body: %w", err)
			}
			// One selector: a second object, or anything after the first,
			// would otherwise be dropped unread.
			if _, err := dec.Token(); err != io.EOF {
				return sel, errors.New("selector body: data after the JSON object")
			}
		}
	}
	return sel, sel.Validate()
}

// resolve returns the ids of the dead letters sel selects, oldest first
// (the order their hooks arrived in), and the ids asked for that are not
// dead letters.
func (s *Server) resolve(sel Selector) (ids, notFound []string, unreadable map[string]bool, err error) {
	ds, err := s.store.DeadLetterHeads(buffer.DeadLetterFilter{IDs: sel.IDs, Target: sel.Target, TargetID: buffer.TargetID(sel.TargetID), Reason: sel.Reason})
	if err != nil {
		return nil, nil, nil, err
	}
	unreadable = make(map[string]bool)
	for i := range ds {
		ids = append(ids, ds[i].ID)
		if ds[i].Reason == buffer.ReasonUnreadable {
			unreadable[ds[i].ID] = true
		}
	}
	// Ids are sortable by creation time; a list asked for by id comes in
	// the order given.
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range sel.IDs {
		if _, found := slices.BinarySearch(ids, id); !found && !slices.Contains(notFound, id) {
			notFound = append(notFound, id)
		}
	}
	return ids, notFound, unreadable, nil
}

func (s *Server) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	s.changeDeadLetters(w, r, "replay")
}

func (s *Server) purgeDeadLetters(w http.ResponseWriter, r *http.Request) {
	s.changeDeadLetters(w, r, "purge")
}

// changeDeadLetters replays or purges the selected dead letters. The
// selection is resolved to ids first, so a dead letter that arrives
// meanwhile is left alone, and an empty selection never turns into the
// store's "all".
func (s *Server) changeDeadLetters(w http.ResponseWriter, r *http.Request, op string) {
	// A replay is one synced write per dead letter: tens of thousands
	// take longer than the server's write timeout. The change is made
	// whoever waits for it, so its answer must not be cut: the client
	// would take a change that was made for a lost connection.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	sel, err := selector(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ids, notFound, unreadable, err := s.resolve(sel)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if len(sel.IDs) > 0 && len(ids) == 0 {
		writeError(w, http.StatusNotFound, "no such dead letters: "+strings.Join(notFound, ", "))
		return
	}
	// A dead letter whose hooks could not be read has no bodies to send
	// (the store would skip it too): it is refused, the others go.
	var refused []string
	if op == "replay" && len(unreadable) > 0 {
		ids = slices.DeleteFunc(ids, func(id string) bool {
			if unreadable[id] {
				refused = append(refused, id)
			}
			return unreadable[id]
		})
		if len(sel.IDs) > 0 && len(ids) == 0 {
			writeError(w, http.StatusConflict, "cannot replay "+strings.Join(refused, ", ")+
				": reason unreadable, the hooks' records could not be read and their bodies are lost; purge them")
			return
		}
	}
	if ids == nil {
		ids = []string{}
	}
	var (
		done  []string // the dead letters replayed or purged
		hooks int      // replay: the hooks that went back
	)
	if len(ids) > 0 {
		f := buffer.DeadLetterFilter{IDs: ids}
		if op == "replay" {
			done, hooks, err = s.store.ReplayDeadLetters(f)
		} else {
			done, err = s.store.PurgeDeadLetters(f)
		}
	}
	if err != nil {
		s.log.Error("dead letters "+op, "selector", sel.kind(), "done", len(done), "error", err)
		code := http.StatusInternalServerError
		if errors.Is(err, buffer.ErrQuota) || errors.Is(err, buffer.ErrDiskFull) {
			code = http.StatusInsufficientStorage // as a capture past the quota
		}
		msg := fmt.Sprintf("%s: %v (%d done before the error)", op, err, len(done))
		if op == "replay" {
			// A dead letter goes back in chunks: one cut short by the
			// error is not among done, though its first hooks went back.
			msg = fmt.Sprintf("%s: %v (%d dead letters and %d hooks replayed before the error; the rest stays dead-lettered)", op, err, len(done), hooks)
		}
		writeError(w, code, msg)
		return
	}
	// A dead letter selected but gone before this one's turn (a purge or
	// a replay took it) was not done here.
	isDone := make(map[string]bool, len(done))
	for _, id := range done {
		isDone[id] = true
	}
	for _, id := range ids {
		if !isDone[id] {
			notFound = append(notFound, id)
		}
	}
	if len(sel.IDs) > 0 && len(done) == 0 {
		writeError(w, http.StatusNotFound, "no such dead letters: "+strings.Join(notFound, ", "))
		return
	}
	if done == nil {
		done = []string{}
	}
	if op == "replay" {
		s.log.Info("dead letters replayed", "selector", sel.kind(), "dead_letters", len(done), "hooks", hooks)
		if len(refused) > 0 {
			s.log.Warn("dead letters not replayed: their hooks could not be read", "selector", sel.kind(), "dead_letters", len(refused))
		}
		writeJSON(w, http.StatusOK, ReplayResult{DeadLetters: len(done), Hooks: hooks, IDs: done, NotFound: notFound, Unreadable: refused})
		return
	}
	s.log.Info("dead letters purged", "selector", sel.kind(), "dead_letters", len(done))
	writeJSON(w, http.StatusOK, PurgeResult{DeadLetters: len(done), IDs: done, NotFound: notFound})
}
