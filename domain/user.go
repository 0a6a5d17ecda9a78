package domain

import (
	"regexp"
	"sort"
	"time"
)

// Users are people who log in. A user is an aggregate (dmgr.ev.user.<name>)
// whose history keeps its name for ever: a deleted user's name is never
// given to someone else, so "who" in the audit trail stays one person.
// The password's argon2id hash lives in the secrets vault; events name it
// by reference only. Credentials (login sessions and API tokens) are facts
// of the user: issued with an id, an expiry and the SHA-256 of their
// secret, revoked by id.

// AggregateUser is the aggregate type of users.
const AggregateUser = "user"

// Event types of users.
const (
	TypeUserCreated       = "UserCreated"
	TypeUserDisabled      = "UserDisabled"
	TypeUserEnabled       = "UserEnabled"
	TypeUserPasswordReset = "UserPasswordReset"
	TypeUserDeleted       = "UserDeleted"
	TypeTokenIssued       = "TokenIssued"
	TypeTokenRevoked      = "TokenRevoked"
)

// Credential kinds.
const (
	TokenSession = "session" // from POST /login; ends at logout or expiry
	TokenAPI     = "api"     // made by the user for the CLI and automation
)

// Limits on what one user holds.
const (
	// MaxAPITokens is how many live API tokens a user may hold.
	MaxAPITokens = 100
	// MaxSessions is how many live sessions a user may hold; a login
	// beyond it ends the oldest.
	MaxSessions = 200
	// MinPasswordLength and MaxPasswordLength bound a password (in bytes).
	MinPasswordLength = 8
	MaxPasswordLength = 1024
)

// User is the state of a user.
type User struct {
	Name       string `json:"name"`
	SuperAdmin bool   `json:"super_admin"`
	Disabled   bool   `json:"disabled"`
	Deleted    bool   `json:"deleted"`
	// PasswordRef names the vault entry that holds the password's hash
	// ("" for a user without a password, who logs in with tokens only).
	PasswordRef string    `json:"-"`
	CreatedAt   time.Time `json:"created_at"`
	// Tokens are the live credentials by id: not revoked, and not expired
	// at the time of the user's last event.
	Tokens   map[string]Token `json:"-"`
	Revision uint64           `json:"-"`
}

// Exists reports whether the user was created (deleted ones included).
func (u *User) Exists() bool { return u != nil && u.Name != "" }

// Active reports whether the user may log in and act.
func (u *User) Active() bool { return u.Exists() && !u.Disabled && !u.Deleted }

// Token is one live credential of a user.
type Token struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	ReadOnly  bool      `json:"read_only"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Verifier is the hex SHA-256 of the secret: the secret itself is
	// never stored, and 256 random bits cannot be found from their hash.
	Verifier string `json:"-"`
}

// UserCreated (user).
type UserCreated struct {
	Name        string    `json:"name"`
	SuperAdmin  bool      `json:"super_admin"`
	PasswordRef string    `json:"password_ref,omitempty"`
	At          time.Time `json:"at"`
}

// UserDisabled (user): the user may not log in; their credentials are
// refused until enabled again.
type UserDisabled struct{}

// UserEnabled (user).
type UserEnabled struct{}

// UserPasswordReset (user): the password is now the one PasswordRef names;
// the user's sessions ended with it.
type UserPasswordReset struct {
	PasswordRef string `json:"password_ref"`
}

// UserDeleted (user): the user is gone; the name stays taken.
type UserDeleted struct{}

// TokenIssued (user): a credential was made.
type TokenIssued struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	ReadOnly  bool      `json:"read_only"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Verifier  string    `json:"verifier"`
}

// TokenRevoked (user): a credential was ended before its expiry.
type TokenRevoked struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

func (UserCreated) EventType() string       { return TypeUserCreated }
func (UserDisabled) EventType() string      { return TypeUserDisabled }
func (UserEnabled) EventType() string       { return TypeUserEnabled }
func (UserPasswordReset) EventType() string { return TypeUserPasswordReset }
func (UserDeleted) EventType() string       { return TypeUserDeleted }
func (TokenIssued) EventType() string       { return TypeTokenIssued }
func (TokenRevoked) EventType() string      { return TypeTokenRevoked }

// EvolveUser folds one event into a user. A credential that expired
// before a new one was issued is dropped then (time comes from the event,
// so a replay folds the same state), which keeps a user's state the size
// of their live credentials.
func EvolveUser(u User, e Event) User {
	switch e := e.(type) {
	case UserCreated:
		u = User{Name: e.Name, SuperAdmin: e.SuperAdmin, PasswordRef: e.PasswordRef, CreatedAt: e.At, Revision: u.Revision}
	case UserDisabled:
		u.Disabled = true
	case UserEnabled:
		u.Disabled = false
	case UserPasswordReset:
		u.PasswordRef = e.PasswordRef
		u.Tokens = u.withTokens(func(t Token) bool { return t.Kind != TokenSession })
	case UserDeleted:
		u.Deleted, u.Tokens = true, nil
	case TokenIssued:
		u.Tokens = u.withTokens(func(t Token) bool { return t.ExpiresAt.After(e.CreatedAt) })
		u.Tokens[e.ID] = Token{ID: e.ID, User: u.Name, Name: e.Name, Kind: e.Kind, ReadOnly: e.ReadOnly,
			CreatedAt: e.CreatedAt, ExpiresAt: e.ExpiresAt, Verifier: e.Verifier}
	case TokenRevoked:
		if _, ok := u.Tokens[e.ID]; ok {
			u.Tokens = u.withTokens(func(t Token) bool { return t.ID != e.ID })
		}
	}
	u.Revision++
	return u
}

// withTokens is a copy of u's tokens that keep holds for (states are
// shared once handed out; Evolve never changes a map it did not make).
func (u User) withTokens(keep func(Token) bool) map[string]Token {
	out := make(map[string]Token, len(u.Tokens)+1)
	for id, t := range u.Tokens {
		if keep(t) {
			out[id] = t
		}
	}
	return out
}

// TokensOf lists a user's live credentials of kind ("" for all) at now,
// oldest first.
func (u *User) TokensOf(kind string, now time.Time) []Token {
	var out []Token
	for _, t := range u.Tokens {
		if (kind == "" || t.Kind == kind) && t.ExpiresAt.After(now) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

var userNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// ValidateUserName checks a user name: 1-64 lower-case letters, digits,
// '.', '_' or '-', starting with a letter or digit.
func ValidateUserName(s string) error {
	if !userNameRE.MatchString(s) {
		return Errorf(Invalid, "user name %q is invalid: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", s)
	}
	return nil
}

// ValidatePassword checks a new password's length (the only rule: long
// passphrases beat composition rules).
func ValidatePassword(p string) error {
	switch {
	case len(p) < MinPasswordLength:
		return Errorf(Invalid, "password is too short: use at least %d characters", MinPasswordLength)
	case len(p) > MaxPasswordLength:
		return Errorf(Invalid, "password is too long: use at most %d bytes", MaxPasswordLength)
	}
	return nil
}

// CreateUser makes a user.
type CreateUser struct {
	Name        string
	SuperAdmin  bool
	PasswordRef string
	At          time.Time
}

// DecideCreateUser decides a CreateUser against the user of that name (nil
// or empty when none ever existed).
func DecideCreateUser(u *User, c CreateUser) ([]Event, error) {
	if err := ValidateUserName(c.Name); err != nil {
		return nil, err
	}
	if u.Exists() {
		if u.Deleted {
			return nil, Errorf(Conflict, "user %s was deleted; a user name is never given again (the audit trail keeps it): choose another", c.Name)
		}
		return nil, Errorf(Conflict, "user %s already exists", c.Name)
	}
	return []Event{UserCreated{Name: c.Name, SuperAdmin: c.SuperAdmin, PasswordRef: c.PasswordRef, At: c.At.UTC()}}, nil
}

// existingUser is u, or a NotFound error naming name.
func existingUser(u *User, name string) error {
	if !u.Exists() || u.Deleted {
		return Errorf(NotFound, "user %s does not exist", name)
	}
	return nil
}

// DecideDisableUser disables a user; by is who asks (not themself).
func DecideDisableUser(u *User, name, by string) ([]Event, error) {
	if err := existingUser(u, name); err != nil {
		return nil, err
	}
	if name == by {
		return nil, Errorf(Conflict, "you cannot disable yourself: ask another super admin")
	}
	if u.Disabled {
		return nil, nil
	}
	return []Event{UserDisabled{}}, nil
}

// DecideEnableUser enables a disabled user.
func DecideEnableUser(u *User, name string) ([]Event, error) {
	if err := existingUser(u, name); err != nil {
		return nil, err
	}
	if !u.Disabled {
		return nil, nil
	}
	return []Event{UserEnabled{}}, nil
}

// DecideResetPassword sets a user's password (its hash stored as ref).
func DecideResetPassword(u *User, name, ref string) ([]Event, error) {
	if err := existingUser(u, name); err != nil {
		return nil, err
	}
	return []Event{UserPasswordReset{PasswordRef: ref}}, nil
}

// DecideDeleteUser deletes a user; by is who asks (not themself).
func DecideDeleteUser(u *User, name, by string) ([]Event, error) {
	if err := existingUser(u, name); err != nil {
		return nil, err
	}
	if name == by {
		return nil, Errorf(Conflict, "you cannot delete yourself: ask another super admin")
	}
	return []Event{UserDeleted{}}, nil
}

// IssueToken makes a credential for a user.
type IssueToken struct {
	ID, Name, Kind string
	ReadOnly       bool
	Now            time.Time
	ExpiresAt      time.Time
	Verifier       string
}

var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 _.:@/-]{0,63}$`)

// MaxTokenLifetime bounds an API token's life.
const MaxTokenLifetime = 366 * 24 * time.Hour

// DecideIssueToken decides an IssueToken for user u.
func DecideIssueToken(u *User, name string, c IssueToken) ([]Event, error) {
	if !u.Active() {
		if u.Exists() && u.Disabled && !u.Deleted {
			return nil, Errorf(Forbidden, "user %s is disabled", name)
		}
		return nil, Errorf(NotFound, "user %s does not exist", name)
	}
	if c.Kind != TokenAPI && c.Kind != TokenSession {
		return nil, Errorf(Invalid, "token kind %q is invalid", c.Kind)
	}
	if c.Kind == TokenAPI && !tokenNameRE.MatchString(c.Name) {
		return nil, Errorf(Invalid, "token name %q is invalid: use 1-64 letters, digits, spaces or _ . : @ / -", c.Name)
	}
	life := c.ExpiresAt.Sub(c.Now)
	if life <= 0 {
		return nil, Errorf(Invalid, "expires_in must be positive, such as \"720h\"")
	}
	if life > MaxTokenLifetime {
		return nil, Errorf(Invalid, "expires_in %s is longer than the longest allowed, %s", life, MaxTokenLifetime)
	}
	if len(c.Verifier) != 64 || c.ID == "" {
		return nil, Errorf(Invalid, "token id and verifier are required")
	}
	live := u.TokensOf(c.Kind, c.Now)
	var out []Event
	switch {
	case c.Kind == TokenAPI && len(live) >= MaxAPITokens:
		return nil, Errorf(Conflict, "user %s already has %d API tokens, the most allowed: revoke one with DELETE /api/v1/tokens/{id}", name, len(live))
	case c.Kind == TokenSession && len(live) >= MaxSessions:
		out = append(out, TokenRevoked{ID: live[0].ID, Reason: "session limit"})
	}
	return append(out, TokenIssued{ID: c.ID, Name: c.Name, Kind: c.Kind, ReadOnly: c.ReadOnly,
		CreatedAt: c.Now.UTC(), ExpiresAt: c.ExpiresAt.UTC(), Verifier: c.Verifier}), nil
}

// DecideRevokeToken ends a user's credential.
func DecideRevokeToken(u *User, id, reason string) ([]Event, error) {
	if _, ok := u.Tokens[id]; !u.Exists() || !ok {
		return nil, Errorf(NotFound, "token %s does not exist (or expired or was revoked)", id)
	}
	return []Event{TokenRevoked{ID: id, Reason: reason}}, nil
}
