//! The api's HTTP helpers, shared by the routes: what a request carries
//! ([`extract`]) and how it is answered ([`respond`]). Route files import
//! them from here.

pub(crate) mod extract;
pub(crate) mod respond;

pub(crate) use extract::{
    customer_id, existing_customer, no_payload, number, page_limit, parse_json, path_id, read_decoded, CommandCall,
    NoPayload, Principal, RawBody,
};
pub(crate) use respond::{answer, asks_to_retry, executed_answer, Problem, RETRY_AFTER_SECONDS};
