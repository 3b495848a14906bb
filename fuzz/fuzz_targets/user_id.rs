#![no_main]
//! User ids arrive in ACL paths (`/app/users/{id}`), bodies and role mappings:
//! any string is refused cleanly or parsed into an id that spells itself back the
//! same way in ACL's form, and whose stored row key reads back as the same id.
use covenant_node::auth::UserId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = UserId::parse_acl(text) else {
        return;
    };
    let again = match UserId::parse_acl(&id.acl()) {
        Ok(again) => again,
        Err(e) => panic!("{text:?} parsed, but its ACL spelling {:?} does not: {e:?}", id.acl()),
    };
    assert_eq!(again, id, "ACL spelling does not round-trip");
    let store = covenant_kv::Store::new();
    assert_eq!(UserId::from_row_key(&id.row_key(&store)), id, "row key does not round-trip");
    let _ = id.ccf();
});
