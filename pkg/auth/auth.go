// Package auth signs and verifies the JSON Web Tokens SocketCluster clients
// carry, and turns every verification failure into the error object a
// SocketCluster client expects (name, message and isBadToken as
// socketcluster-server sends them).
package auth

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scc-k8s/scc/pkg/codec"
)

// Algorithms this package signs and verifies with.
const (
	HS256 = "HS256"
	HS384 = "HS384"
	HS512 = "HS512"
	RS256 = "RS256"
	ES256 = "ES256"
)

// DefaultExpiry is the lifetime of a token signed without an "exp" claim
// (socketcluster-server's authDefaultExpiry, 86400 s).
const DefaultExpiry = 24 * time.Hour

// ErrConfig is returned for an unusable configuration.
var ErrConfig = errors.New("auth: invalid configuration")

// Config selects the algorithm and keys.
type Config struct {
	// Algorithm is one of HS256 (default), HS384, HS512, RS256, ES256.
	Algorithm string
	// Key is the shared HMAC secret for the HS algorithms. Required for them:
	// every worker of a cluster must share it.
	Key []byte
	// PrivateKeyPEM and PublicKeyPEM are the key pair for RS256 and ES256.
	// A verifier-only engine may leave PrivateKeyPEM empty.
	PrivateKeyPEM []byte
	PublicKeyPEM  []byte
	// DefaultExpiry is added to "iat" when a token has no "exp" (default 24h).
	DefaultExpiry time.Duration
	// ClockSkew is how far "exp" and "nbf" may be off between the token's
	// issuer and this process (jsonwebtoken's clockTolerance). Default 0.
	ClockSkew time.Duration
	// MaxTokenBytes refuses a longer token before any decoding or
	// signature check (AuthTokenInvalidError "jwt too large"). Default
	// 16 KiB.
	MaxTokenBytes int
}

// Engine signs and verifies tokens. It is safe for concurrent use.
type Engine struct {
	method    jwt.SigningMethod
	signKey   any
	verifyKey any
	expiry    time.Duration
	skew      float64 // seconds
	maxBytes  int
	parser    *jwt.Parser
}

// New validates cfg and returns an Engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Algorithm == "" {
		cfg.Algorithm = HS256
	}
	if cfg.DefaultExpiry <= 0 {
		cfg.DefaultExpiry = DefaultExpiry
	}
	if cfg.MaxTokenBytes <= 0 {
		cfg.MaxTokenBytes = 16 << 10
	}
	if cfg.ClockSkew < 0 {
		return nil, fmt.Errorf("%w: negative clock skew", ErrConfig)
	}
	e := &Engine{expiry: cfg.DefaultExpiry, skew: cfg.ClockSkew.Seconds(), maxBytes: cfg.MaxTokenBytes}
	switch strings.ToUpper(cfg.Algorithm) {
	case HS256, HS384, HS512:
		if len(cfg.Key) == 0 {
			return nil, fmt.Errorf("%w: %s needs a key", ErrConfig, cfg.Algorithm)
		}
		e.method = jwt.GetSigningMethod(strings.ToUpper(cfg.Algorithm))
		e.signKey, e.verifyKey = cfg.Key, cfg.Key
	case RS256:
		e.method = jwt.SigningMethodRS256
		pub, err := jwt.ParseRSAPublicKeyFromPEM(cfg.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("%w: RS256 public key: %v", ErrConfig, err)
		}
		e.verifyKey = pub
		if len(cfg.PrivateKeyPEM) > 0 {
			priv, err := jwt.ParseRSAPrivateKeyFromPEM(cfg.PrivateKeyPEM)
			if err != nil {
				return nil, fmt.Errorf("%w: RS256 private key: %v", ErrConfig, err)
			}
			e.signKey = priv
		}
	case ES256:
		e.method = jwt.SigningMethodES256
		pub, err := jwt.ParseECPublicKeyFromPEM(cfg.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("%w: ES256 public key: %v", ErrConfig, err)
		}
		e.verifyKey = pub
		if len(cfg.PrivateKeyPEM) > 0 {
			priv, err := jwt.ParseECPrivateKeyFromPEM(cfg.PrivateKeyPEM)
			if err != nil {
				return nil, fmt.Errorf("%w: ES256 private key: %v", ErrConfig, err)
			}
			e.signKey = priv
		}
	default:
		return nil, fmt.Errorf("%w: unsupported algorithm %q", ErrConfig, cfg.Algorithm)
	}
	e.parser = jwt.NewParser(jwt.WithValidMethods([]string{e.method.Alg()}), jwt.WithoutClaimsValidation(), jwt.WithJSONNumber())
	return e, nil
}

// Algorithm returns the signing algorithm's name.
func (e *Engine) Algorithm() string { return e.method.Alg() }

// Sign signs claims. Like jsonwebtoken it sets "iat" to now and, when the
// claims have no "exp", sets "exp" to now plus the default expiry. It
// returns the token and the claims as signed.
func (e *Engine) Sign(claims map[string]any, now time.Time) (string, map[string]any, error) {
	if e.signKey == nil {
		return "", nil, fmt.Errorf("%w: no signing key", ErrConfig)
	}
	c := make(jwt.MapClaims, len(claims)+2)
	maps.Copy(c, claims)
	iat := now.Unix()
	if _, ok := c["iat"]; !ok {
		c["iat"] = iat
	}
	if exp, ok := c["exp"]; !ok || exp == nil {
		c["exp"] = iat + int64(e.expiry/time.Second)
	}
	s, err := jwt.NewWithClaims(e.method, c).SignedString(e.signKey)
	if err != nil {
		return "", nil, fmt.Errorf("auth: sign: %w", err)
	}
	return s, map[string]any(c), nil
}

// Verify checks a token's signature and its "nbf" and "exp" claims against
// now. Failures come back as SocketCluster errors: AuthTokenInvalidError
// (malformed, bad signature, wrong algorithm, missing), AuthTokenExpiredError
// (with "expiry"), AuthTokenNotBeforeError (with "date") and AuthTokenError
// for anything else; each carries isBadToken as socketcluster-server sets it.
func (e *Engine) Verify(token string, now time.Time) (map[string]any, *codec.Error) {
	if token == "" {
		return nil, invalid("jwt must be provided")
	}
	if len(token) > e.maxBytes {
		return nil, invalid("jwt too large")
	}
	if strings.Count(token, ".") != 2 {
		return nil, invalid("jwt malformed")
	}
	t, err := e.parser.Parse(token, func(*jwt.Token) (any, error) { return e.verifyKey, nil })
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenMalformed):
			return nil, invalid("jwt malformed")
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			if t != nil && t.Method != nil && t.Method.Alg() != e.method.Alg() {
				return nil, invalid("invalid algorithm")
			}
			return nil, invalid("invalid signature")
		case errors.Is(err, jwt.ErrTokenUnverifiable):
			return nil, invalid("invalid algorithm")
		default:
			return nil, codec.NewError(codec.AuthTokenErrorName, err.Error(), codec.Member{Key: "isBadToken", Value: true})
		}
	}
	claims, ok := t.Claims.(jwt.MapClaims)
	if !ok {
		return nil, invalid("invalid token")
	}
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = fromJSONNumber(v)
	}
	if nbf, ok := numericClaim(out, "nbf"); ok && float64(now.Unix())+e.skew < nbf {
		return nil, codec.NewError(codec.AuthTokenNotBeforeError, "jwt not active",
			codec.Member{Key: "date", Value: jsDate(nbf)}, codec.Member{Key: "isBadToken", Value: false})
	}
	if exp, ok := numericClaim(out, "exp"); ok && float64(now.Unix())-e.skew >= exp {
		return nil, ExpiredError("jwt expired", jsDate(exp))
	}
	return out, nil
}

// ExpiredError is the error for a token whose "exp" has passed; expiry is
// what the "expiry" field carries (an ISO date, or the exp number when a
// live socket's token lapses, as socketcluster-server does).
func ExpiredError(message string, expiry any) *codec.Error {
	return codec.NewError(codec.AuthTokenExpiredError, message,
		codec.Member{Key: "expiry", Value: expiry}, codec.Member{Key: "isBadToken", Value: true})
}

// Expiry returns the "exp" claim of verified claims, if it has one.
func Expiry(claims map[string]any) (time.Time, bool) {
	exp, ok := numericClaim(claims, "exp")
	if !ok {
		return time.Time{}, false
	}
	sec, frac := math.Modf(exp)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

func invalid(msg string) *codec.Error {
	return codec.NewError(codec.AuthTokenInvalidError, msg, codec.Member{Key: "isBadToken", Value: true})
}

func numericClaim(c map[string]any, key string) (float64, bool) {
	switch v := c[key].(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	case int:
		return float64(v), true
	}
	return 0, false
}

// fromJSONNumber turns the parser's json.Number values (kept exact while
// parsing) into float64, the type encoding/json gives everywhere else.
func fromJSONNumber(v any) any {
	switch x := v.(type) {
	case interface{ Float64() (float64, error) }:
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = fromJSONNumber(e)
		}
	case []any:
		for i, e := range x {
			x[i] = fromJSONNumber(e)
		}
	}
	return v
}

// jsDate formats seconds since the epoch the way a JavaScript Date
// serialises (toJSON): 2006-01-02T15:04:05.000Z.
func jsDate(sec float64) string {
	ms := int64(math.Round(sec * 1000))
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}
