//! Interned strings with reference counts: the task store keeps each distinct instance list,
//! task type, message and odd request id once, and each task holds 4-byte handles to them.
//!
//! Counting references (instead of interning for ever) matters because messages and request ids
//! come from the network: a string is freed when the last task that used it is evicted, so the
//! table never outgrows the tasks it serves.

use std::collections::HashMap;
use std::sync::Arc;

/// A handle to an interned string. [`Sym::EMPTY`] is `""` and is never counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sym(u32);

impl Sym {
    /// The empty string.
    pub const EMPTY: Sym = Sym(0);

    /// The handle as a number, for compact storage.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// A handle from [`Sym::raw`].
    pub fn from_raw(raw: u32) -> Sym {
        Sym(raw)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    text: Arc<str>,
    refs: u32,
}

/// The table. Cloning it clones the handles' meaning with it (a store and its copy agree).
#[derive(Debug, Clone)]
pub struct Symbols {
    index: HashMap<Arc<str>, Sym>,
    entries: Vec<Entry>,
    free: Vec<u32>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            index: HashMap::new(),
            entries: vec![Entry {
                text: Arc::from(""),
                refs: 0,
            }],
            free: Vec::new(),
        }
    }
}

impl Symbols {
    /// The handle of `s`, counting one more reference to it.
    pub fn intern(&mut self, s: &str) -> Sym {
        if s.is_empty() {
            return Sym::EMPTY;
        }
        if let Some(&sym) = self.index.get(s) {
            self.entries[sym.0 as usize].refs += 1;
            return sym;
        }
        let text: Arc<str> = Arc::from(s);
        let entry = Entry {
            text: text.clone(),
            refs: 1,
        };
        let sym = if let Some(slot) = self.free.pop() {
            self.entries[slot as usize] = entry;
            Sym(slot)
        } else {
            self.entries.push(entry);
            Sym(u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 strings"))
        };
        self.index.insert(text, sym);
        sym
    }

    /// Counts one more reference to a handle already held.
    pub fn retain(&mut self, sym: Sym) {
        if sym != Sym::EMPTY {
            self.entries[sym.0 as usize].refs += 1;
        }
    }

    /// Drops one reference; the string is freed with its last one.
    pub fn release(&mut self, sym: Sym) {
        if sym == Sym::EMPTY {
            return;
        }
        let e = &mut self.entries[sym.0 as usize];
        e.refs -= 1;
        if e.refs == 0 {
            let text = std::mem::replace(&mut e.text, Arc::from(""));
            self.index.remove(&text);
            self.free.push(sym.0);
        }
    }

    /// The string of a handle.
    pub fn get(&self, sym: Sym) -> &str {
        &self.entries[sym.0 as usize].text
    }

    /// The handle of `s` if it is interned, without counting a reference.
    pub fn find(&self, s: &str) -> Option<Sym> {
        if s.is_empty() {
            return Some(Sym::EMPTY);
        }
        self.index.get(s).copied()
    }

    /// How many distinct strings are held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no string is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_shared_and_freed_with_their_last_reference() {
        let mut s = Symbols::default();
        let a = s.intern("cdb-a");
        let b = s.intern("cdb-a");
        assert_eq!(a, b);
        assert_eq!(s.len(), 1);
        s.release(a);
        assert_eq!(s.get(b), "cdb-a");
        s.release(b);
        assert!(s.is_empty());
        assert_eq!(s.find("cdb-a"), None);
        // The freed slot is reused.
        let c = s.intern("cdb-c");
        assert_eq!(c, a);
        assert_eq!(s.get(c), "cdb-c");
        assert_eq!(s.intern(""), Sym::EMPTY);
        s.release(Sym::EMPTY);
        assert_eq!(s.get(Sym::EMPTY), "");
    }
}
