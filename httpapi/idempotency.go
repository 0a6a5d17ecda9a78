package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
)

// IdempotencyBucket is the JetStream KV bucket that remembers the answers
// to commands sent with an Idempotency-Key.
const IdempotencyBucket = "dmgr-idempotency"

// idempotencyTTL is how long a key is remembered.
const idempotencyTTL = 24 * time.Hour

// A pending entry older than this belongs to a server that died mid-request;
// the key may be taken over. The commit id derived from the key makes the
// re-run's append a duplicate of any append the dead server made.
const idempotencyStale = time.Minute

type idemRecord struct {
	// Fingerprint is the digest of the request's query and media type;
	// BodySHA256 and BodySize identify its whole body (set once the
	// request has been answered).
	Fingerprint string            `json:"fingerprint"`
	BodySHA256  string            `json:"body_sha256,omitempty"`
	BodySize    int64             `json:"body_size,omitempty"`
	Pending     bool              `json:"pending"`
	Started     time.Time         `json:"started"`
	Status      int               `json:"status,omitempty"`
	Header      map[string]string `json:"header,omitempty"`
	Body        []byte            `json:"body,omitempty"`
}

// Idempotency replays the stored answer of a command sent again with the
// same Idempotency-Key.
type Idempotency struct {
	kv jetstream.KeyValue
}

// OpenIdempotency creates or opens the bucket.
func OpenIdempotency(ctx context.Context, js jetstream.JetStream, replicas int) (*Idempotency, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: IdempotencyBucket, Description: "answers to commands sent with an Idempotency-Key",
		TTL: idempotencyTTL, History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", IdempotencyBucket, err)
	}
	return &Idempotency{kv: kv}, nil
}

// errKeyReused answers 422, as the IETF Idempotency-Key draft asks.
var errKeyReused = errors.New("Idempotency-Key was already used with a different request; use a new key for a new request")

type idemCtxKey struct{}

// idemIDs are the commit and operation ids a keyed command must use, so
// that running it twice appends one commit.
type idemIDs struct{ commitID, operationID string }

func idempotentIDs(ctx context.Context) (idemIDs, bool) {
	v, ok := ctx.Value(idemCtxKey{}).(idemIDs)
	return v, ok
}

var idemNamespace = uuid.MustParse("6f1e8f9e-3c0b-4a59-9e55-6b0d7c1f2a10")

// maxDrain is how much of a body its handler left unread the middleware
// reads to complete the body's digest before answering; a request whose
// body is longer than that is answered but not remembered.
const maxDrain = 64 << 10

// Middleware wraps a command handler. A request is the same as the one a
// key remembers when its route, query, media type and whole body (SHA-256
// over every byte, whatever the size) are the same. The body's digest is
// computed as the handler reads it (a package streams through it), so the
// body is never held in memory for it; a request whose key holds a
// finished answer is compared with it by reading at most as many bytes as
// the remembered body had.
func (m *Idempotency) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if len(key) > 255 {
			writeProblem(w, r, http.StatusBadRequest, domain.Invalid, "Idempotency-Key is longer than 255 characters")
			return
		}
		scope := actorOf(r.Context()) + "\n" + r.Method + " " + r.URL.Path + "\n" + key
		sum := sha256.Sum256([]byte(scope))
		kvKey := hex.EncodeToString(sum[:])
		fp := fingerprint(r)
		ctx := r.Context()
		rev, replay, err := m.claim(ctx, kvKey, fp)
		if errors.Is(err, errKeyReused) {
			writeProblem(w, r, http.StatusUnprocessableEntity, domain.Invalid, err.Error())
			return
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		if replay != nil {
			same, err := sameBody(r.Body, replay.BodySize, replay.BodySHA256)
			if err != nil {
				writeError(w, r, err)
				return
			}
			if !same {
				writeProblem(w, r, http.StatusUnprocessableEntity, domain.Invalid, errKeyReused.Error())
				return
			}
			for k, v := range replay.Header {
				if v != "" {
					w.Header().Set(k, v)
				}
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(replay.Status)
			_, _ = w.Write(replay.Body)
			return
		}
		ids := idemIDs{
			commitID:    uuid.NewSHA1(idemNamespace, []byte("commit\n"+scope)).String(),
			operationID: uuid.NewSHA1(idemNamespace, []byte("operation\n"+scope)).String(),
		}
		body := &digestBody{rc: r.Body, h: sha256.New()}
		if r.Body == nil {
			body.rc, body.eof = http.NoBody, true
		}
		r.Body = body
		rec := &recorder{ResponseWriter: w, status: http.StatusOK, body: body}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(ctx, idemCtxKey{}, ids)))
		rec.drain() // a handler that wrote nothing

		store, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rec.status >= 500 || !body.eof {
			// Let the client retry a failure of ours with the same key; and
			// forget a request whose body was not read to its end (its
			// digest is unknown; it was refused, so a re-run is harmless).
			if err := m.kv.Delete(store, kvKey, jetstream.LastRevision(rev)); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("release idempotency key")
			}
			return
		}
		done := idemRecord{Fingerprint: fp, BodySHA256: hex.EncodeToString(body.h.Sum(nil)), BodySize: body.n,
			Status: rec.status, Started: time.Now().UTC(), Body: rec.buf.Bytes(),
			Header: map[string]string{"Content-Type": w.Header().Get("Content-Type"), "Location": w.Header().Get("Location")}}
		b, _ := json.Marshal(done)
		if _, err := m.kv.Update(store, kvKey, b, rev); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("store idempotent answer")
		}
	})
}

// claim returns the stored answer to replay, or marks the key pending and
// returns its revision.
func (m *Idempotency) claim(ctx context.Context, kvKey, fp string) (uint64, *idemRecord, error) {
	pending, _ := json.Marshal(idemRecord{Fingerprint: fp, Pending: true, Started: time.Now().UTC()})
	for attempt := 0; attempt < 3; attempt++ {
		rev, err := m.kv.Create(ctx, kvKey, pending)
		if err == nil {
			return rev, nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, nil, domain.Errorf(domain.Unavailable, "idempotency store: %v", err)
		}
		entry, err := m.kv.Get(ctx, kvKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted in between: try to create again
		}
		if err != nil {
			return 0, nil, domain.Errorf(domain.Unavailable, "idempotency store: %v", err)
		}
		var rec idemRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			return 0, nil, fmt.Errorf("idempotency record %s: %w", kvKey, err)
		}
		if rec.Fingerprint != fp {
			return 0, nil, errKeyReused
		}
		if !rec.Pending {
			return 0, &rec, nil
		}
		if time.Since(rec.Started) < idempotencyStale {
			return 0, nil, domain.Errorf(domain.Conflict, "a request with this Idempotency-Key is still in progress; retry later")
		}
		rev, err = m.kv.Update(ctx, kvKey, pending, entry.Revision())
		if err == nil {
			return rev, nil, nil
		}
	}
	return 0, nil, domain.Errorf(domain.Conflict, "a request with this Idempotency-Key is still in progress; retry later")
}

// fingerprint identifies the request's query and media type; the body is
// identified by its digest (digestBody).
func fingerprint(r *http.Request) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", r.URL.RawQuery, r.Header.Get("Content-Type"))
	return hex.EncodeToString(h.Sum(nil))
}

// sameBody reports whether body is size bytes with the given SHA-256,
// reading at most size+1 bytes of it.
func sameBody(body io.Reader, size int64, digest string) (bool, error) {
	h := sha256.New()
	if body == nil {
		body = http.NoBody
	}
	n, err := io.Copy(h, io.LimitReader(body, size+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return false, err
		}
		return false, domain.Errorf(domain.Invalid, "read request body: %v", err)
	}
	return n == size && hex.EncodeToString(h.Sum(nil)) == digest, nil
}

// digestBody hashes a request body as it is read and records whether it
// was read to its end.
type digestBody struct {
	rc  io.ReadCloser
	h   hash.Hash
	n   int64
	eof bool
}

func (d *digestBody) Read(p []byte) (int, error) {
	n, err := d.rc.Read(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	if errors.Is(err, io.EOF) {
		d.eof = true
	}
	return n, err
}

func (d *digestBody) Close() error { return d.rc.Close() }

// drain reads what the handler left, up to maxDrain bytes, so that the
// digest covers the whole body.
func (d *digestBody) drain() {
	if !d.eof {
		_, _ = io.Copy(io.Discard, io.LimitReader(d, maxDrain))
		if !d.eof { // exactly maxDrain bytes were left: see whether that was all
			var one [1]byte
			_, _ = d.Read(one[:])
		}
	}
}

// recorder keeps a copy of the answer for replay. Before the answer
// starts it drains the body (a body can no longer be read once an
// HTTP/1 answer is sent).
type recorder struct {
	http.ResponseWriter
	status  int
	buf     bytes.Buffer
	body    *digestBody
	drained bool
}

func (r *recorder) drain() {
	if !r.drained {
		r.drained = true
		r.body.drain()
	}
}

func (r *recorder) WriteHeader(status int) {
	r.drain()
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.drain()
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}
