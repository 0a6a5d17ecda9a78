package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	Fingerprint string            `json:"fingerprint"`
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

// maxFingerprintBody is the largest body that is hashed into the
// fingerprint; larger (package) bodies are fingerprinted by their length.
const maxFingerprintBody = 1 << 20

// Middleware wraps a command handler.
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
		fp, err := fingerprint(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
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
			for k, v := range replay.Header {
				w.Header().Set(k, v)
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
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(ctx, idemCtxKey{}, ids)))

		store := context.WithoutCancel(ctx)
		if rec.status >= 500 {
			// Let the client retry a failure of ours with the same key.
			_ = m.kv.Delete(store, kvKey, jetstream.LastRevision(rev))
			return
		}
		done := idemRecord{Fingerprint: fp, Status: rec.status, Started: time.Now().UTC(), Body: rec.body.Bytes(),
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

// fingerprint identifies the request's content: query and body (bodies
// over 1 MiB, i.e. packages, by their declared length).
func fingerprint(r *http.Request) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", r.URL.RawQuery, r.Header.Get("Content-Type"))
	if r.Body == nil || r.ContentLength > maxFingerprintBody || (r.ContentLength < 0 && r.Header.Get("Content-Type") == "application/gzip") {
		fmt.Fprintf(h, "length %d\n", r.ContentLength)
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFingerprintBody+1))
	if err != nil {
		return "", domain.Errorf(domain.Invalid, "read request body: %v", err)
	}
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// recorder keeps a copy of the answer for replay.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}
