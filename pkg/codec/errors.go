package codec

import (
	"encoding/json"
	"errors"
)

// Error names that SocketCluster clients know (sc-errors).
const (
	AuthTokenExpiredError        = "AuthTokenExpiredError"
	AuthTokenInvalidError        = "AuthTokenInvalidError"
	AuthTokenNotBeforeError      = "AuthTokenNotBeforeError"
	AuthTokenErrorName           = "AuthTokenError"
	AuthErrorName                = "AuthError"
	SilentMiddlewareBlockedError = "SilentMiddlewareBlockedError"
	InvalidActionError           = "InvalidActionError"
	InvalidArgumentsError        = "InvalidArgumentsError"
	InvalidMessageError          = "InvalidMessageError"
	SocketProtocolError          = "SocketProtocolError"
	ServerProtocolError          = "ServerProtocolError"
	BrokerError                  = "BrokerError"
	TimeoutError                 = "TimeoutError"
	BadConnectionError           = "BadConnectionError"
	ResourceLimitError           = "ResourceLimitError"
)

// Member is one extra own field of a dehydrated error, kept in order.
type Member struct {
	Key   string
	Value any
}

// Error is a SocketCluster error object: what a JavaScript peer sees as an
// Error with a name, a message and any other own fields (for example
// "expiry" on AuthTokenExpiredError or "isBadToken" on auth failures).
type Error struct {
	Name    string
	Message string
	Extra   []Member
}

// NewError returns an error with the given name and message.
func NewError(name, message string, extra ...Member) *Error {
	return &Error{Name: name, Message: message, Extra: extra}
}

func (e *Error) Error() string {
	if e.Name == "" {
		return e.Message
	}
	return e.Name + ": " + e.Message
}

// Get returns the value of an extra field.
func (e *Error) Get(key string) (any, bool) {
	for _, m := range e.Extra {
		if m.Key == key {
			return m.Value, true
		}
	}
	return nil, false
}

// With returns a copy of e with the extra field key set to v.
func (e *Error) With(key string, v any) *Error {
	c := *e
	c.Extra = make([]Member, 0, len(e.Extra)+1)
	for _, m := range e.Extra {
		if m.Key != key {
			c.Extra = append(c.Extra, m)
		}
	}
	c.Extra = append(c.Extra, Member{key, v})
	return &c
}

// MarshalJSON writes the dehydrated form sc-errors produces: "message"
// first, then "name", then the other fields in order.
func (e *Error) MarshalJSON() ([]byte, error) {
	return appendErrorObject(nil, e), nil
}

func appendErrorObject(dst []byte, e *Error) []byte {
	dst = append(dst, `{"message":`...)
	dst = AppendString(dst, e.Message)
	if e.Name != "" {
		dst = append(dst, `,"name":`...)
		dst = AppendString(dst, e.Name)
	}
	for _, m := range e.Extra {
		if m.Key == "message" || m.Key == "name" {
			continue
		}
		v, err := Marshal(m.Value)
		if err != nil {
			continue
		}
		dst = append(dst, ',')
		dst = AppendString(dst, m.Key)
		dst = append(dst, ':')
		dst = append(dst, v...)
	}
	return append(dst, '}')
}

// AppendError appends err dehydrated. An *Error anywhere in err's chain is
// written with its name and fields; any other error becomes
// {"message":...,"name":"Error"}.
func AppendError(dst []byte, err error) []byte {
	var e *Error
	if errors.As(err, &e) {
		return appendErrorObject(dst, e)
	}
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
	}
	return appendErrorObject(dst, &Error{Name: "Error", Message: msg})
}

// ParseError hydrates the "error" member of a response. A bare string
// becomes an Error named "Error" with that message; an object gives its
// name, message and other fields; null or absent gives nil.
func ParseError(raw json.RawMessage) *Error {
	if IsNull(raw) {
		return nil
	}
	if s, ok := String(raw); ok {
		return &Error{Name: "Error", Message: s}
	}
	e := &Error{Name: "Error"}
	if !IsObject(raw) {
		e.Message = string(trimSpace(raw))
		return e
	}
	eachField(trimSpace(raw), func(key, val []byte) bool {
		k, _ := unquote(key)
		switch k {
		case "name":
			if s, ok := String(val); ok {
				e.Name = s
			}
		case "message":
			if s, ok := String(val); ok {
				e.Message = s
			}
		default:
			var v any
			if json.Unmarshal(val, &v) == nil {
				e.Extra = append(e.Extra, Member{k, v})
			}
		}
		return true
	})
	return e
}
