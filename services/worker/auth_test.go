package worker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/codec"
	"github.com/scc-k8s/scc/services/worker"
)

func sign(t testing.TB, key string, claims map[string]any) string {
	t.Helper()
	e, err := auth.New(auth.Config{Key: []byte(key)})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.Sign(claims, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func authError(t *testing.T, r map[string]any) map[string]any {
	t.Helper()
	ae, ok := r["data"].(map[string]any)["authError"].(map[string]any)
	if !ok {
		t.Fatalf("no authError in %v", r)
	}
	return ae
}

func TestHandshakeTokens(t *testing.T) {
	for _, v := range []int{1, 2} {
		s := startServer(t, worker.Config{ProtocolVersion: v}, nil)
		removeFrame := `{"event":"#removeAuthToken"}`
		if v == 1 {
			removeFrame = `{"event":"#removeAuthToken","data":null}`
		}
		name := map[int]string{1: "v1", 2: "v2"}[v]
		t.Run(name+" valid", func(t *testing.T) {
			p := testutil.DialPeer(t, s.URL)
			r := p.Handshake(sign(t, testKey, map[string]any{"username": "alice"}))
			if r["data"].(map[string]any)["isAuthenticated"] != true {
				t.Fatalf("valid token not accepted: %v", r)
			}
		})
		t.Run(name+" expired", func(t *testing.T) {
			p := testutil.DialPeer(t, s.URL)
			exp := time.Now().Add(-time.Hour).Unix()
			tok := sign(t, testKey, map[string]any{"username": "alice", "exp": exp})
			p.Send(`{"event":"#handshake","data":{"authToken":"` + tok + `"},"cid":1}`)
			first := p.Next()
			if v == 1 {
				if first != removeFrame {
					t.Fatalf("v1 sends #removeAuthToken first, got %s", first)
				}
				first = p.Next()
			}
			var r map[string]any
			_ = json.Unmarshal([]byte(first), &r)
			ae := authError(t, r)
			wantExpiry := time.Unix(exp, 0).UTC().Format("2006-01-02T15:04:05.000Z")
			if ae["name"] != "AuthTokenExpiredError" || ae["message"] != "jwt expired" || ae["expiry"] != wantExpiry || ae["isBadToken"] != true {
				t.Fatalf("authError %v", ae)
			}
			if r["data"].(map[string]any)["isAuthenticated"] != false {
				t.Fatal("expired token authenticated")
			}
			if v == 2 {
				p.Expect(removeFrame)
			}
		})
		for _, c := range []struct {
			name, token, errName, msg string
			bad                       bool
		}{
			{"bad signature", sign(t, "other-key", map[string]any{"u": 1}), "AuthTokenInvalidError", "invalid signature", true},
			{"malformed", "not.a.jwt", "AuthTokenInvalidError", "jwt malformed", true},
			{"garbage", "garbage", "AuthTokenInvalidError", "jwt malformed", true},
			{"not before", sign(t, testKey, map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}), "AuthTokenNotBeforeError", "jwt not active", false},
		} {
			t.Run(name+" "+c.name, func(t *testing.T) {
				p := testutil.DialPeer(t, s.URL)
				r := p.Handshake(c.token)
				ae := authError(t, r)
				if ae["name"] != c.errName || ae["message"] != c.msg || ae["isBadToken"] != c.bad {
					t.Fatalf("authError %v", ae)
				}
				if c.bad && v == 2 {
					p.Expect(removeFrame)
				}
				p.Send(`{"event":"#subscribe","data":{"channel":"x"},"cid":2}`)
				p.Expect(`{"rid":2}`)
			})
		}
		t.Run(name+" token of the wrong type", func(t *testing.T) {
			p := testutil.DialPeer(t, s.URL)
			p.Send(`{"event":"#handshake","data":{"authToken":123},"cid":1}`)
			var r map[string]any
			for r == nil || r["rid"] == nil {
				r = p.ExpectJSON()
			}
			if ae := authError(t, r); ae["name"] != "AuthTokenError" {
				t.Fatalf("authError %v", ae)
			}
		})
	}
}

func TestAuthenticateEvent(t *testing.T) {
	for _, v := range []int{1, 2} {
		s := startServer(t, worker.Config{ProtocolVersion: v}, nil)
		p := s.connect(t)
		p.Send(`{"event":"#authenticate","data":"` + sign(t, testKey, map[string]any{"u": "bob"}) + `","cid":2}`)
		p.Expect(`{"rid":2,"data":{"isAuthenticated":true,"authError":null}}`)
		p.Send(`{"event":"#authenticate","data":"` + sign(t, "wrong", map[string]any{"u": "bob"}) + `","cid":3}`)
		if v == 2 {
			p.Expect(`{"rid":3,"error":{"message":"invalid signature","name":"AuthTokenInvalidError","isBadToken":true}}`)
			p.Expect(`{"event":"#removeAuthToken"}`)
		} else {
			p.Expect(`{"event":"#removeAuthToken","data":null}`)
			p.Expect(`{"rid":3,"error":{"message":"invalid signature","name":"AuthTokenInvalidError","isBadToken":true},"data":{"isAuthenticated":false,"authError":{"message":"invalid signature","name":"AuthTokenInvalidError","isBadToken":true}}}`)
		}
		p.Send(`{"event":"#authenticate","data":"x"}`)
		p.ExpectClose(worker.CloseHandshakeRejected, 3*time.Second)
	}
}

func TestSetAuthTokenAndExpiry(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	var mu sync.Mutex
	var seenExpired []*codec.Error
	s := startServer(t, worker.Config{Clock: clock, Auth: auth.Config{Key: []byte(testKey), DefaultExpiry: time.Minute}}, func(srv *worker.Server) {
		srv.HandleProcedure("login", func(r *worker.Request) (any, error) {
			return nil, r.Socket.SetAuthToken(map[string]any{"username": "carol"})
		})
		srv.HandleProcedure("whoami", func(r *worker.Request) (any, error) {
			if tok := r.Socket.AuthToken(); tok != nil {
				return tok["username"], nil
			}
			return nil, nil
		})
		srv.UseInbound(func(a *worker.Action) error {
			if a.AuthTokenExpiredError != nil {
				mu.Lock()
				seenExpired = append(seenExpired, a.AuthTokenExpiredError)
				mu.Unlock()
			}
			return nil
		})
	})
	p := s.connect(t)
	p.Send(`{"event":"login","cid":2}`)
	set := p.ExpectJSON()
	if set["event"] != "#setAuthToken" {
		t.Fatalf("want #setAuthToken, got %v", set)
	}
	token := set["data"].(map[string]any)["token"].(string)
	p.Expect(`{"rid":2}`)
	p.Send(`{"event":"whoami","cid":3}`)
	p.Expect(`{"rid":3,"data":"carol"}`)

	// The token the server set works at the next handshake.
	q := testutil.DialPeer(t, s.URL)
	if r := q.Handshake(token); r["data"].(map[string]any)["isAuthenticated"] != true {
		t.Fatalf("server-signed token refused: %v", r)
	}

	// Two minutes later the token has expired: the next event
	// deauthenticates the socket and middleware sees why.
	now.Add(int64(2 * time.Minute))
	p.Send(`{"event":"whoami","cid":4}`)
	p.Expect(`{"event":"#removeAuthToken"}`)
	p.Expect(`{"rid":4}`)
	mu.Lock()
	defer mu.Unlock()
	if len(seenExpired) != 1 || seenExpired[0].Name != "AuthTokenExpiredError" || seenExpired[0].Message != "The socket auth token has expired" {
		t.Fatalf("middleware saw %v", seenExpired)
	}
}

func TestExpiryCheckedOnPong(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	s := startServer(t, worker.Config{Clock: func() time.Time { return time.Unix(0, now.Load()) }}, nil)
	tok := sign(t, testKey, map[string]any{"exp": time.Now().Add(time.Minute).Unix()})
	p := testutil.DialPeer(t, s.URL)
	p.Handshake(tok)
	now.Add(int64(2 * time.Minute))
	p.Send(``) // pong
	p.Expect(`{"event":"#removeAuthToken"}`)
}

func TestAuthenticateMiddleware(t *testing.T) {
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.UseInbound(func(a *worker.Action) error {
			if a.Type == worker.ActionAuthenticate && a.AuthToken["banned"] == true {
				return codec.NewError("BannedError", "banned")
			}
			return nil
		})
	})
	p := testutil.DialPeer(t, s.URL)
	r := p.Handshake(sign(t, testKey, map[string]any{"banned": true}))
	if ae := authError(t, r); ae["name"] != "BannedError" || r["data"].(map[string]any)["isAuthenticated"] != false {
		t.Fatalf("handshake %v", r)
	}
	p.Send(`{"event":"#authenticate","data":"` + sign(t, testKey, map[string]any{"banned": true}) + `","cid":2}`)
	p.Expect(`{"rid":2,"data":{"isAuthenticated":false,"authError":{"message":"banned","name":"BannedError"}}}`)
}

func TestAsymmetricKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		alg  string
		priv any
		pub  any
	}{{auth.RS256, rsaKey, &rsaKey.PublicKey}, {auth.ES256, ecKey, &ecKey.PublicKey}} {
		t.Run(c.alg, func(t *testing.T) {
			privDER, _ := x509.MarshalPKCS8PrivateKey(c.priv)
			pubDER, _ := x509.MarshalPKIXPublicKey(c.pub)
			ac := auth.Config{
				Algorithm:     c.alg,
				PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
				PublicKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
			}
			s := startServer(t, worker.Config{Auth: ac}, nil)
			tok, _, err := s.Auth().Sign(map[string]any{"u": 1}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok, "ey") {
				t.Fatalf("token %q", tok)
			}
			p := testutil.DialPeer(t, s.URL)
			if r := p.Handshake(tok); r["data"].(map[string]any)["isAuthenticated"] != true {
				t.Fatalf("%s token refused: %v", c.alg, r)
			}
			// An HS256 token is refused by an asymmetric server.
			p2 := testutil.DialPeer(t, s.URL)
			if ae := authError(t, p2.Handshake(sign(t, testKey, map[string]any{"u": 1}))); ae["name"] != "AuthTokenInvalidError" {
				t.Fatalf("HS256 token on %s server: %v", c.alg, ae)
			}
		})
	}
}
