package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	e, err := New(Config{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	tok, claims, err := e.Sign(map[string]any{"username": "a"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if claims["exp"] != now.Unix()+86400 || claims["iat"] != now.Unix() {
		t.Fatalf("claims %v", claims)
	}
	got, verr := e.Verify(tok, now.Add(time.Hour))
	if verr != nil || got["username"] != "a" || got["exp"] != float64(now.Unix()+86400) {
		t.Fatalf("verify: %v %v", got, verr)
	}
	_, verr = e.Verify(tok, now.Add(86400*time.Second))
	if verr == nil || verr.Name != "AuthTokenExpiredError" {
		t.Fatalf("expired: %v", verr)
	}
	if v, _ := verr.Get("expiry"); v != "2023-11-15T22:13:20.000Z" {
		t.Fatalf("expiry %v", v)
	}
	other, _ := New(Config{Key: []byte("other")})
	if _, verr := other.Verify(tok, now); verr == nil || verr.Message != "invalid signature" {
		t.Fatalf("bad signature: %v", verr)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("HS256 without key accepted")
	}
	if _, err := New(Config{Algorithm: "none", Key: []byte("k")}); err == nil {
		t.Fatal("alg none accepted")
	}
}

func FuzzVerify(f *testing.F) {
	e, _ := New(Config{Key: []byte("k")})
	good, _, _ := e.Sign(map[string]any{"a": 1}, time.Now())
	for _, s := range []string{good, "", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", good + "x", "..", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := e.Verify(tok, time.Now())
		if err == nil && tok != good {
			// Only a token signed with the key may pass: its third part
			// must be the HS256 MAC of the first two, under "k", and its
			// header must name HS256.
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("%q verified without three parts", tok)
			}
			mac := hmac.New(sha256.New, []byte("k"))
			mac.Write([]byte(parts[0] + "." + parts[1]))
			sig, derr := base64.RawURLEncoding.DecodeString(parts[2])
			if derr != nil || !hmac.Equal(sig, mac.Sum(nil)) {
				t.Fatalf("%q verified without a valid signature", tok)
			}
			hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
			if !strings.Contains(string(hdr), `"HS256"`) {
				t.Fatalf("%q verified with header %s", tok, hdr)
			}
			if _, err2 := e.Verify(tok, time.Now()); err2 != nil {
				t.Fatalf("unstable verification of %q", tok)
			}
		}
		if err != nil && err.Name == "" {
			t.Fatalf("unnamed error for %q", tok)
		}
	})
}

// The attacks on a verifier: a token that names "none", an HS256 token
// signed with the RS256 public key as its HMAC secret (the verifier must
// not take the algorithm from the token), a token too large to decode.
func TestAlgorithmConfusionAndSize(t *testing.T) {
	priv, pub := rsaPair(t)
	rs, err := New(Config{Algorithm: RS256, PrivateKeyPEM: priv, PublicKeyPEM: pub})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	good, _, err := rs.Sign(map[string]any{"u": "a"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, verr := rs.Verify(good, now); verr != nil {
		t.Fatal(verr)
	}
	hs, _ := New(Config{Algorithm: HS256, Key: pub}) // the public key as an HMAC secret
	forged, _, _ := hs.Sign(map[string]any{"u": "admin"}, now)
	if _, verr := rs.Verify(forged, now); verr == nil || verr.Name != "AuthTokenInvalidError" {
		t.Fatalf("HS256 signed with the public key: %v", verr)
	}
	none := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1IjoiYWRtaW4ifQ."
	if _, verr := rs.Verify(none, now); verr == nil || verr.Name != "AuthTokenInvalidError" {
		t.Fatalf("alg none: %v", verr)
	}
	big := good[:strings.LastIndex(good, ".")] + "." + strings.Repeat("A", 20<<10)
	if _, verr := rs.Verify(big, now); verr == nil || verr.Message != "jwt too large" {
		t.Fatalf("oversized: %v", verr)
	}
}

func TestClockSkew(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	strict, _ := New(Config{Key: []byte("k")})
	lenient, _ := New(Config{Key: []byte("k"), ClockSkew: 5 * time.Second})
	tok, _, _ := strict.Sign(map[string]any{"exp": now.Unix(), "nbf": now.Unix() + 3}, now)
	if _, verr := strict.Verify(tok, now.Add(2*time.Second)); verr == nil || verr.Name != "AuthTokenNotBeforeError" {
		t.Fatalf("strict, before nbf: %v", verr)
	}
	// nbf 3 s ahead and exp now: within 5 s of skew both hold.
	if _, verr := lenient.Verify(tok, now.Add(2*time.Second)); verr != nil {
		t.Fatalf("lenient: %v", verr)
	}
	if _, verr := lenient.Verify(tok, now.Add(6*time.Second)); verr == nil || verr.Name != "AuthTokenExpiredError" {
		t.Fatalf("lenient, past the skew: %v", verr)
	}
	if _, err := New(Config{Key: []byte("k"), ClockSkew: -time.Second}); err == nil {
		t.Fatal("negative skew accepted")
	}
}

func rsaPair(t *testing.T) (priv, pub []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb})
}
