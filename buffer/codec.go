package buffer

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Keys. Every key starts with one byte naming its kind; ids are big-endian
// so that Badger's order is numeric order.
//
//	m/format                   the store's format (uvarint, storeFormat)
//	m/node                     random node id of this store (4 bytes)
//	m/flush                    written and dropped at once, to flush the memtable
//	s/hook, s/batch, s/target  Badger sequences
//	u/<url>                    -> target id (stores of earlier versions; never read, deleted with the target)
//	t/<tid>                    -> target record (url, head, gone)
//	q/<tid><seq><recv><size>   -> hook record (the FIFO: seq is global and increasing)
//	f/<tid>                    -> in-flight batch record
//	d/<batch id>               -> dead letter
//	r/<batch id>               -> how many of its hooks a replay put back (uvarint)
const (
	kindQueue    = 'q'
	kindTarget   = 't'
	kindURL      = 'u'
	kindFlight   = 'f'
	kindDead     = 'd'
	kindReplayed = 'r'
)

var (
	keyFormat      = []byte("m/format")
	keyNode        = []byte("m/node")
	keyFlush       = []byte("m/flush") // written and dropped to flush the memtable
	keySeqHook     = []byte("s/hook")
	keySeqBatch    = []byte("s/batch")
	keySeqTarget   = []byte("s/target")
	prefixTarget   = []byte{kindTarget}
	prefixFlight   = []byte{kindFlight}
	prefixQueue    = []byte{kindQueue}
	prefixDead     = []byte{kindDead}
	queueKeyLength = 1 + 8 + 8 + 8 + 4
)

func targetKey(id TargetID) []byte {
	k := make([]byte, 9)
	k[0] = kindTarget
	binary.BigEndian.PutUint64(k[1:], uint64(id))
	return k
}

func flightKey(id TargetID) []byte {
	k := targetKey(id)
	k[0] = kindFlight
	return k
}

func urlKey(url string) []byte { return append([]byte{kindURL}, url...) }

func deadKey(id string) []byte { return append([]byte{kindDead}, id...) }

func replayedKey(id string) []byte { return append([]byte{kindReplayed}, id...) }

// queuePrefix is the prefix of every queue key of one target.
func queuePrefix(id TargetID) []byte {
	k := targetKey(id)
	k[0] = kindQueue
	return k
}

// queueKey carries the arrival time and the record size of the hook, so
// that a restart rebuilds counts, bytes and the oldest arrival from a
// key-only scan.
type queueKey struct {
	target   TargetID
	seq      uint64
	received time.Time
	size     int64
}

func (q queueKey) bytes() []byte {
	k := make([]byte, queueKeyLength)
	k[0] = kindQueue
	binary.BigEndian.PutUint64(k[1:], uint64(q.target))
	binary.BigEndian.PutUint64(k[9:], q.seq)
	binary.BigEndian.PutUint64(k[17:], uint64(q.received.UnixNano()))
	binary.BigEndian.PutUint32(k[25:], uint32(q.size))
	return k
}

// seekKey is the smallest queue key of the target with a sequence >= seq.
func seekKey(id TargetID, seq uint64) []byte {
	k := make([]byte, 17)
	copy(k, queuePrefix(id))
	binary.BigEndian.PutUint64(k[9:], seq)
	return k
}

func parseQueueKey(k []byte) (queueKey, error) {
	if len(k) != queueKeyLength || k[0] != kindQueue {
		return queueKey{}, fmt.Errorf("parse queue key %x: %w", k, errCorrupt)
	}
	return queueKey{
		target:   TargetID(binary.BigEndian.Uint64(k[1:])),
		seq:      binary.BigEndian.Uint64(k[9:]),
		received: time.Unix(0, int64(binary.BigEndian.Uint64(k[17:]))),
		size:     int64(binary.BigEndian.Uint32(k[25:])),
	}, nil
}

var errCorrupt = errors.New("corrupt record")

// storeFormat is the format of the records this version writes and
// reads. A version that changes how a record is written raises it, so
// that an older hookproxy started on its store refuses it (errNewerStore)
// rather than take its records for damage (see unreadable).
const storeFormat = 1

// errNewerStore is a store written by a later hookproxy version.
var errNewerStore = errors.New("the data directory was written by a newer hookproxy version")

// idLength is the length of an id made by newID.
const idLength = 26

// newID makes a 26-character id that sorts by time: 48 bits of Unix
// milliseconds, the store's 32-bit node id (so two hookproxy instances
// never hand a receiver the same Idempotency-Key), and 48 bits of a
// sequence that is unique within the store. Encoded in Crockford base32,
// like a ULID.
func newID(t time.Time, node uint32, seq uint64) string {
	b := idMillis(t)
	binary.BigEndian.PutUint32(b[6:], node)
	b[10], b[11], b[12], b[13], b[14], b[15] = byte(seq>>40), byte(seq>>32), byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
	return encodeBase32(b)
}

// idTimeMillis returns the time part of an id made by newID, in Unix
// milliseconds; false when id is not of that form.
func idTimeMillis(id string) (int64, bool) {
	if len(id) < idLength {
		return 0, false
	}
	// The first 10 characters carry 3 + 9*5 = 48 bits: the milliseconds.
	var ms int64
	for i := range 10 {
		v := strings.IndexByte(crockford, id[i])
		if v < 0 {
			return 0, false
		}
		ms = ms<<5 | int64(v)
	}
	return ms, true
}

// batchSeqBit, the top bit of an id's 48-bit sequence part, is set in
// every batch id: hooks and batches count with sequences of their own,
// both from 0, and without it the first batch made in the millisecond of
// the first hook had the hook's id.
const batchSeqBit = 1 << 47

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// encodeBase32 encodes 128 bits as 26 Crockford base32 characters, most
// significant first (the first character carries only 3 bits).
func encodeBase32(b [16]byte) string {
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

func randomNode() (uint32, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("read random node id: %w", err)
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// Hook records are a small binary format: the hot path writes one per
// capture, and JSON would base64 the body.
//
//	version byte (1), then uvarint-length-prefixed: id, target, method,
//	headers (uvarint count of names; each: name, uvarint count, values),
//	body; then varint received (Unix nanoseconds).
const hookRecordVersion = 1

func encodeHook(h *Hook) []byte {
	b := make([]byte, 0, recordLen(h))
	b = append(b, hookRecordVersion)
	b = appendString(b, h.ID)
	b = appendString(b, h.Target)
	b = appendString(b, h.Method)
	b = binary.AppendUvarint(b, uint64(len(h.Header)))
	for k, vs := range h.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(h.Body)))
	b = append(b, h.Body...)
	b = binary.AppendVarint(b, h.Received.UnixNano())
	return b
}

// recordLen is the length of encodeHook(h), an id not yet assigned
// counted as one of newID's.
func recordLen(h *Hook) int {
	str := func(n int) int { return uvarintLen(uint64(n)) + n }
	id := len(h.ID)
	if id == 0 {
		id = idLength
	}
	n := 1 + str(id) + str(len(h.Target)) + str(len(h.Method)) + uvarintLen(uint64(len(h.Header)))
	for k, vs := range h.Header {
		n += str(len(k)) + uvarintLen(uint64(len(vs)))
		for _, v := range vs {
			n += str(len(v))
		}
	}
	n += str(len(h.Body))
	t := h.Received.UnixNano()
	return n + uvarintLen(uint64(t<<1)^uint64(t>>63)) // AppendVarint's zig-zag
}

// uvarintLen is the length of binary.AppendUvarint's encoding of x.
func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string { return string(r.bytes()) }

// decodeHook decodes a hook record. The body is copied: Badger's value
// buffers are only valid inside the transaction.
func decodeHook(b []byte) (Hook, error) {
	if len(b) == 0 || b[0] != hookRecordVersion {
		return Hook{}, fmt.Errorf("decode hook: %w", errCorrupt)
	}
	r := reader{b: b[1:]}
	h := Hook{ID: r.string(), Target: r.string(), Method: r.string()}
	if n := r.uvarint(); n > 0 && r.err == nil {
		if n > uint64(len(r.b)) {
			return Hook{}, fmt.Errorf("decode hook: %w", errCorrupt)
		}
		h.Header = make(http.Header, n)
		for range n {
			k := r.string()
			m := r.uvarint()
			if r.err != nil || m > uint64(len(r.b)) {
				return Hook{}, fmt.Errorf("decode hook: %w", errCorrupt)
			}
			vs := make([]string, 0, m)
			for range m {
				vs = append(vs, r.string())
			}
			h.Header[k] = vs
		}
	}
	h.Body = append([]byte(nil), r.bytes()...)
	h.Received = time.Unix(0, r.varint())
	if r.err != nil {
		return Hook{}, fmt.Errorf("decode hook: %w", r.err)
	}
	return h, nil
}

// NewRandomID makes an id of the same form as a hook's, for a request
// that is not stored (a hook forwarded because the store failed): 48 bits
// of Unix milliseconds, then 80 random bits.
func NewRandomID(t time.Time) string {
	b := idMillis(t)
	rand.Read(b[6:]) // never fails (crypto/rand)
	return encodeBase32(b)
}

// idMillis returns an id's 16 bytes with the first 6 set to t in Unix
// milliseconds.
func idMillis(t time.Time) [16]byte {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	return b
}
