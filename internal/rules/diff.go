package rules

// Diff compares an expected listing with a live one, line by line and in order. It returns
// "-line" for each expected line that is absent from live and "+line" for each live line that
// is not expected (a moved line appears as both), or nil when the listings are equal.
func Diff(expected, live []string) []string {
	n, m := len(expected), len(live)
	// lcs[i][j] is the length of the longest common subsequence of expected[i:] and live[j:].
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if expected[i] == live[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && expected[i] == live[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+"+live[j])
			j++
		default:
			out = append(out, "-"+expected[i])
			i++
		}
	}
	return out
}
