package codec

import (
	"encoding/json"
	"strings"
	"testing"
)

var validCases = []string{
	``, ` `, `{}`, `[]`, ` {"a" : [1, -2.5e+3, true, false, null, "x"]} `, `{"a":1,}`, `[1,]`, `[,1]`,
	`{"a"}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `{"a":1}{}`, `[1] x`, `]`, `}`, `[}`, `{]`,
	`"abc`, `"a\"b"`, `"a\\"`, `"\u00e9\uD83D"`, `"\u00g0"`, `"\x"`, `"tab	in"`, "\"nl\nin\"", "\"\x7f\xff\xfe\"",
	`0`, `-0`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `1E-7`, `-1.0e10`, `2.`, `+1`, `0x10`,
	`tru`, `true`, `truex`, `nul`, `null`, `fals`, `false`, `NaN`, `Infinity`,
	`{"event":"#publish","data":{"channel":"c","data":"scc12345.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"cid":7}`,
	`[{"event":"#publish","data":{"channel":"a\\b","data":1}},{"rid":1}]`,
	"{\"\x00\":1}", "\"12345678\\", "\"1234567\\\"", "\"123456789012345\"",
	strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting),
	strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1),
	strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100),
}

func TestValidMatchesEncodingJSON(t *testing.T) {
	for _, c := range validCases {
		if got, want := Valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("Valid(%.80q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	seeds(f)
	for _, c := range validCases {
		if len(c) < 200 {
			f.Add([]byte(c))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", b, got, want)
		}
		// skipString must agree with the validator on where a valid
		// string ends.
		if len(b) > 0 && b[0] == '"' {
			if end := validString(b, 0); end > 0 && skipString(b, 0) != end {
				t.Fatalf("skipString(%q) = %d, validString says %d", b, skipString(b, 0), end)
			}
		}
	})
}

var publishMsg = []byte(`{"event":"#publish","data":{"channel":"bench-fanout","data":"scc1a2b3c4d5e6f.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"cid":12345}`)

func BenchmarkValid(b *testing.B) {
	b.SetBytes(int64(len(publishMsg)))
	for b.Loop() {
		if !Valid(publishMsg) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkValidEncodingJSON(b *testing.B) {
	b.SetBytes(int64(len(publishMsg)))
	for b.Loop() {
		if !json.Valid(publishMsg) {
			b.Fatal("invalid")
		}
	}
}
