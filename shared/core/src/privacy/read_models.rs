//! Read models hold personal values encrypted (issue 16 item 1): filled in
//! by the sealed read-models work.
