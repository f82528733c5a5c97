package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scc-k8s/scc/pkg/auth"
)

// ErrConfig wraps every configuration error NewServer returns.
var ErrConfig = errors.New("worker: invalid configuration")

// Config configures a Server. The zero value of every field means its
// default, which the field's comment states.
type Config struct {
	// Path is the WebSocket endpoint's path. Default "/socketcluster/".
	// Protocol version 1 normalises it to a leading and trailing slash, as
	// 14.x servers do; version 2 uses it verbatim.
	Path string
	// ProtocolVersion is 1 (socketcluster-server <= 14) or 2 (>= 15). Default 2.
	ProtocolVersion int
	// PingInterval is how often the server pings each socket. Default 8s.
	PingInterval time.Duration
	// PingTimeout closes a socket (4001) that has not answered a ping for
	// this long; clients learn it in the handshake. Default 20s for
	// protocol 1 and 30s for protocol 2.
	PingTimeout time.Duration
	// HandshakeTimeout closes a socket (4005) that has not sent #handshake
	// in this long. Default 10s.
	HandshakeTimeout time.Duration
	// AckTimeout bounds Socket.Invoke when its context has no deadline.
	// Default 10s.
	AckTimeout time.Duration
	// DisallowClientPublish refuses #publish from clients with
	// InvalidActionError "Client publish feature is disabled". Default false
	// (clients may publish).
	DisallowClientPublish bool
	// Origins lists the allowed Origin headers as "host:port" entries,
	// "host:*" or "*:port", separated by spaces or commas. Default "*:*".
	// A refused origin gets HTTP 403.
	Origins string
	// SocketChannelLimit caps the channels one socket may subscribe to.
	// Default 1000; negative means unlimited.
	SocketChannelLimit int
	// MaxChannelNameLength caps a channel name in bytes. Default 1024.
	MaxChannelNameLength int
	// MaxPayload caps one inbound WebSocket message in bytes; a bigger one
	// closes the socket with 1009. Default 1 MiB.
	MaxPayload int64
	// HandshakeMaxPayload caps one inbound message before the socket has
	// completed its SocketCluster handshake: an unauthenticated client gets
	// only this much. Default 64 KiB (and never more than MaxPayload).
	HandshakeMaxPayload int64
	// PerMessageDeflate accepts permessage-deflate (RFC 7692) when a client
	// offers it (browsers and the Node client do): messages of 128 bytes
	// or more are compressed, each on its own. A compressed message that
	// inflates past the current payload limit closes the socket with 1009.
	// Default false, as in SocketCluster.
	PerMessageDeflate bool
	// MaxPendingBytes caps the bytes queued for one socket; a socket over it
	// is a slow consumer and is closed with CloseSlowConsumer. Default 8 MiB.
	MaxPendingBytes int
	// InboundRate throttles reading from one socket to this many messages
	// per second (the rest wait in TCP buffers). Default 0: no limit.
	InboundRate float64
	// MaxInboundRate closes a socket (CloseTooManyMessages) that sends
	// more messages than this many per second, with bursts of one second's
	// worth: a flood costs the server one second of the limit, then the
	// connection. Default 0: no limit. (InboundRate, below it, slows a
	// client down instead.)
	MaxInboundRate float64
	// DrainRate paces Shutdown and gateway drains: sockets closed per
	// second with CloseDraining, so the workers that take the clients
	// back see a ramp. Default 1000; negative closes all at once.
	DrainRate float64
	// TrustedProxies are the peers (the gateway, a load balancer) whose
	// X-Forwarded-For header Socket.RemoteAddr believes. Default none.
	TrustedProxies []netip.Prefix
	// TunnelToken is what a gateway must present to open a tunnel session
	// (internal/tunnel: the connections of many of its clients carried
	// on one). Default none: any peer may; its streams get no more trust
	// than a direct connection from it (X-Forwarded-For is believed from
	// TrustedProxies only). cluster.Join sets the cluster token.
	TunnelToken string
	// WriteTimeout bounds one write to a socket (checked by the sweeper, so
	// up to a quarter of it, at most 1s, late). Default 10s.
	WriteTimeout time.Duration

	// Auth configures JWT signing and verification. Auth.Key is required
	// for HS algorithms; when no key or key pair is set at all, a random
	// HMAC key is generated (tokens then only work on this process).
	Auth auth.Config

	// Broker connects the server to its message broker. Default: a private
	// in-process LocalBroker.
	Broker BrokerFactory

	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's Prometheus metrics. Default: a
	// registry of the server's own, served by Server.MetricsHandler.
	Registerer prometheus.Registerer
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
}

func (c *Config) setDefaults() error {
	if c.ProtocolVersion == 0 {
		c.ProtocolVersion = 2
	}
	if c.ProtocolVersion != 1 && c.ProtocolVersion != 2 {
		return fmt.Errorf("%w: protocol version %d (want 1 or 2)", ErrConfig, c.ProtocolVersion)
	}
	if c.Path == "" {
		c.Path = "/socketcluster/"
	}
	if c.ProtocolVersion == 1 {
		c.Path = "/" + strings.Trim(c.Path, "/") + "/"
		if c.Path == "//" {
			c.Path = "/"
		}
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("%w: path %q must start with /", ErrConfig, c.Path)
	}
	if c.PingInterval == 0 {
		c.PingInterval = 8 * time.Second
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = 30 * time.Second
		if c.ProtocolVersion == 1 {
			c.PingTimeout = 20 * time.Second
		}
	}
	if c.PingInterval < 0 || c.PingTimeout < 0 {
		return fmt.Errorf("%w: negative ping interval or timeout", ErrConfig)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 10 * time.Second
	}
	if c.Origins == "" {
		c.Origins = "*:*"
	}
	if c.SocketChannelLimit == 0 {
		c.SocketChannelLimit = 1000
	}
	if c.MaxChannelNameLength <= 0 {
		c.MaxChannelNameLength = 1024
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 1 << 20
	}
	if c.HandshakeMaxPayload <= 0 {
		c.HandshakeMaxPayload = 64 << 10
	}
	c.HandshakeMaxPayload = min(c.HandshakeMaxPayload, c.MaxPayload)
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = 8 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.DrainRate == 0 {
		c.DrainRate = 1000
	}
	if c.MaxInboundRate < 0 {
		return fmt.Errorf("%w: negative max inbound rate", ErrConfig)
	}
	if c.InboundRate < 0 {
		return fmt.Errorf("%w: negative inbound rate", ErrConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}
