package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzAnswer feeds arbitrary bytes to Answer with a local view and no
// upstreams (nothing leaves the process): it must not panic, and every
// reply it returns must parse.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.", mdns.TypeA},
		{"WWW.", mdns.TypeAAAA},
		{"db.", mdns.TypeMX},
		{"2.0.18.172.in-addr.arpa.", mdns.TypePTR},
		{"example.com.", mdns.TypeTXT},
	} {
		m := new(mdns.Msg).SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, false)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	r := NewResolver(nil, nil)
	v := testView(true)
	f.Fuzz(func(t *testing.T, query []byte) {
		reply, err := r.Answer(t.Context(), query, v)
		if err != nil {
			return
		}
		var m mdns.Msg
		if err := m.Unpack(reply); err != nil {
			t.Fatalf("reply to %x does not parse: %v", query, err)
		}
		if !m.Response {
			t.Fatalf("reply to %x is not a response", query)
		}
	})
}
