//! A set of provider indices: a word inline, more only for services of over 64 providers.

#[derive(Debug, Clone, Default)]
pub(crate) struct IndexSet {
    low: u64,
    high: Vec<u64>,
}

impl IndexSet {
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1 << i;
        } else {
            let word = i / 64 - 1;
            if self.high.len() <= word {
                self.high.resize(word + 1, 0);
            }
            self.high[word] |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            self.high
                .get(i / 64 - 1)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.iter().all(|w| *w == 0)
    }

    pub fn clear(&mut self) {
        self.low = 0;
        self.high.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::IndexSet;

    #[test]
    fn index_set_holds_large_indices() {
        let mut s = IndexSet::default();
        for i in [0, 63, 64, 700] {
            s.insert(i);
        }
        assert!([0, 63, 64, 700].iter().all(|&i| s.contains(i)));
        assert!(![1, 65, 699, 5000].iter().any(|&i| s.contains(i)));
        s.clear();
        assert!(!s.contains(700));
    }
}
