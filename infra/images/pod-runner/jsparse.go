package main

import (
	"fmt"
	"unicode/utf16"
)

// The outputs warning quotes JSON.parse's error message, so both adapters give the same text: this is a
// validating JSON parser that fails where V8's JsonParser fails (Node 24), with V8's messages. Text is
// handled as UTF-16 code units, as positions in V8's messages count them.

// decodeUTF8 decodes like Buffer.toString('utf8') (WHATWG: each maximal invalid subpart becomes U+FFFD).
func decodeUTF8(b []byte) []uint16 {
	out := make([]uint16, 0, len(b))
	var cp rune
	needed, seen := 0, 0
	lower, upper := byte(0x80), byte(0xBF)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if needed == 0 {
			switch {
			case c <= 0x7F:
				out = append(out, uint16(c))
			case c >= 0xC2 && c <= 0xDF:
				needed, cp = 1, rune(c&0x1F)
			case c >= 0xE0 && c <= 0xEF:
				if c == 0xE0 {
					lower = 0xA0
				} else if c == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(c&0xF)
			case c >= 0xF0 && c <= 0xF4:
				if c == 0xF0 {
					lower = 0x90
				} else if c == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(c&0x7)
			default:
				out = append(out, 0xFFFD)
			}
			continue
		}
		if c < lower || c > upper {
			needed, seen, cp, lower, upper = 0, 0, 0, 0x80, 0xBF
			out = append(out, 0xFFFD)
			i-- // the byte starts over
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(c&0x3F)
		seen++
		if seen == needed {
			out = utf16.AppendRune(out, cp)
			needed, seen, cp = 0, 0, 0
		}
	}
	if needed != 0 {
		out = append(out, 0xFFFD)
	}
	return out
}

type jsToken int

const (
	tokEOS jsToken = iota
	tokString
	tokNumber
	tokTrue
	tokFalse
	tokNull
	tokLBrace
	tokRBrace
	tokLBrack
	tokRBrack
	tokColon
	tokComma
	tokWhitespace
	tokIllegal
)

func tokenOf(c uint16) jsToken {
	switch {
	case c == '"':
		return tokString
	case c == '-' || (c >= '0' && c <= '9'):
		return tokNumber
	case c == 't':
		return tokTrue
	case c == 'f':
		return tokFalse
	case c == 'n':
		return tokNull
	case c == '{':
		return tokLBrace
	case c == '}':
		return tokRBrace
	case c == '[':
		return tokLBrack
	case c == ']':
		return tokRBrack
	case c == ':':
		return tokColon
	case c == ',':
		return tokComma
	case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		return tokWhitespace
	}
	return tokIllegal
}

type jsonError struct{ msg string }

type jsParser struct {
	s []uint16
	i int
}

// jsonParseError is "" when JSON.parse accepts the text, else the message of its SyntaxError.
func jsonParseError(text []uint16) (msg string) {
	p := &jsParser{s: text}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(jsonError)
			if !ok {
				panic(r)
			}
			msg = e.msg
		}
	}()
	p.parse()
	return ""
}

func (p *jsParser) peek() jsToken {
	for p.i < len(p.s) && tokenOf(p.s[p.i]) == tokWhitespace {
		p.i++
	}
	if p.i == len(p.s) {
		return tokEOS
	}
	return tokenOf(p.s[p.i])
}

func (p *jsParser) cur() int {
	if p.i < len(p.s) {
		return int(p.s[p.i])
	}
	return -1
}

func isDigit(c int) bool { return c >= '0' && c <= '9' }

// at is V8's " at position P (line L column C)"; \r\n counts as one line break.
func (p *jsParser) at() string {
	line, lineStart := 1, 0
	for k := 0; k < p.i; k++ {
		if p.s[k] == '\r' && k < p.i-1 && p.s[k+1] == '\n' {
			k++
		}
		if p.s[k] == '\r' || p.s[k] == '\n' {
			line++
			lineStart = k + 1
		}
	}
	return fmt.Sprintf(" at position %d (line %d column %d)", p.i, line, p.i-lineStart+1)
}

// fail reports like JsonParser::ReportUnexpectedToken: a given message (with the position) wins.
func (p *jsParser) fail(tok jsToken, message string) {
	if message != "" {
		panic(jsonError{message + p.at()})
	}
	switch tok {
	case tokEOS:
		panic(jsonError{"Unexpected end of JSON input"})
	case tokNumber:
		panic(jsonError{"Unexpected number in JSON" + p.at()})
	case tokString:
		panic(jsonError{"Unexpected string in JSON" + p.at()})
	}
	source := string(utf16.Decode(p.s))
	switch source {
	case "NaN", "Infinity", "undefined", "[object Object]":
		panic(jsonError{fmt.Sprintf("\"%s\" is not valid JSON", source)})
	}
	char := string(utf16.Decode(p.s[p.i : p.i+1]))
	const context = 10
	n, pos := len(p.s), p.i
	sub := func(from, to int) string { return string(utf16.Decode(p.s[from:min(to, n)])) }
	switch {
	case n < 2*context+1:
		panic(jsonError{fmt.Sprintf("Unexpected token '%s', \"%s\" is not valid JSON", char, source)})
	case pos < context:
		panic(jsonError{fmt.Sprintf("Unexpected token '%s', \"%s\"... is not valid JSON", char, sub(0, pos+context))})
	case pos < n-context:
		panic(jsonError{fmt.Sprintf("Unexpected token '%s', ...\"%s\"... is not valid JSON", char, sub(pos-context, pos+context))})
	default:
		panic(jsonError{fmt.Sprintf("Unexpected token '%s', ...\"%s\" is not valid JSON", char, sub(pos-context, n))})
	}
}

func (p *jsParser) failChar() {
	if p.i >= len(p.s) {
		p.fail(tokEOS, "")
	}
	tok := tokIllegal
	if p.s[p.i] <= 0x7F {
		tok = tokenOf(p.s[p.i])
	}
	p.fail(tok, "")
}

func (p *jsParser) expect(tok jsToken, message string) {
	if got := p.peek(); got != tok {
		p.fail(got, message)
	}
	if tok != tokString { // a string is consumed by scanString
		p.i++
	}
}

func (p *jsParser) parse() {
	var stack []jsToken // tokLBrace or tokLBrack
	for {
		// A value.
		switch tok := p.peek(); tok {
		case tokString:
			p.scanString()
		case tokNumber:
			p.scanNumber()
		case tokLBrace:
			p.i++
			if p.peek() == tokRBrace {
				p.i++
				break
			}
			p.expect(tokString, "Expected property name or '}' in JSON")
			p.scanString()
			p.expect(tokColon, "Expected ':' after property name in JSON")
			stack = append(stack, tokLBrace)
			continue
		case tokLBrack:
			p.i++
			if p.peek() == tokRBrack {
				p.i++
				break
			}
			stack = append(stack, tokLBrack)
			continue
		case tokTrue:
			p.scanLiteral("true")
		case tokFalse:
			p.scanLiteral("false")
		case tokNull:
			p.scanLiteral("null")
		default:
			p.fail(tok, "")
		}
		// What follows a value: the rest of the containers it is in.
		next := false
		for len(stack) > 0 && !next {
			if stack[len(stack)-1] == tokLBrace {
				if p.peek() == tokComma {
					p.i++
					p.expect(tokString, "Expected double-quoted property name in JSON")
					p.scanString()
					p.expect(tokColon, "Expected ':' after property name in JSON")
					next = true
					continue
				}
				p.expect(tokRBrace, "Expected ',' or '}' after property value in JSON")
			} else {
				if p.peek() == tokComma {
					p.i++
					next = true
					continue
				}
				p.expect(tokRBrack, "Expected ',' or ']' after array element in JSON")
			}
			stack = stack[:len(stack)-1]
		}
		if !next {
			break
		}
	}
	if tok := p.peek(); tok != tokEOS {
		p.fail(tok, "Unexpected non-whitespace character after JSON")
	}
}

func (p *jsParser) scanString() {
	p.i++ // the opening quote
	for {
		if p.i >= len(p.s) {
			p.fail(tokIllegal, "Unterminated string in JSON")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return
		case c == '\\':
			p.i++
			switch p.cur() {
			case -1:
				p.fail(tokEOS, "")
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				p.i++
				for k := 0; k < 4; k++ {
					c := p.cur()
					if !(isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
						p.fail(tokIllegal, "Bad Unicode escape in JSON")
					}
					p.i++
				}
			default:
				if p.cur() > 0xFF { // beyond V8's one-byte table of escapes
					p.fail(tokIllegal, "")
				}
				p.fail(tokIllegal, "Bad escaped character in JSON")
			}
		case c < 0x20:
			p.fail(tokIllegal, "Bad control character in string literal in JSON")
		default:
			p.i++
		}
	}
}

func (p *jsParser) scanNumber() {
	if p.cur() == '-' {
		p.i++
	}
	if p.cur() == '0' {
		p.i++
		if isDigit(p.cur()) {
			p.fail(tokNumber, "")
		}
	} else {
		start := p.i
		for isDigit(p.cur()) {
			p.i++
		}
		if p.i == start {
			p.fail(tokIllegal, "No number after minus sign in JSON")
		}
	}
	if p.cur() == '.' {
		p.i++
		if !isDigit(p.cur()) {
			p.fail(tokIllegal, "Unterminated fractional number in JSON")
		}
		for isDigit(p.cur()) {
			p.i++
		}
	}
	if c := p.cur(); c == 'e' || c == 'E' {
		p.i++
		if c := p.cur(); c == '+' || c == '-' {
			p.i++
		}
		if !isDigit(p.cur()) {
			p.fail(tokIllegal, "Exponent part is missing a number in JSON")
		}
		for isDigit(p.cur()) {
			p.i++
		}
	}
}

// scanLiteral is JsonParser::ScanLiteral: the first character already matched.
func (p *jsParser) scanLiteral(lit string) {
	remaining := len(p.s) - p.i
	if remaining >= len(lit) {
		match := true
		for k := 1; k < len(lit); k++ {
			if p.s[p.i+k] != uint16(lit[k]) {
				match = false
				break
			}
		}
		if match {
			p.i += len(lit)
			return
		}
	}
	p.i++
	for k := 0; k < min(len(lit)-1, remaining-1); k++ {
		if p.s[p.i] != uint16(lit[1+k]) {
			p.failChar()
		}
		p.i++
	}
	p.fail(tokEOS, "")
}
