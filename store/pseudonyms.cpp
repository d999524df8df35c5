#include "store/pseudonyms.hpp"

#include <mutex>

namespace lockbridge::store {

namespace {

std::string_view as_text(const protocol::keyed_hmac::mac_type& mac) {
  return {reinterpret_cast<const char*>(mac.data()), mac.size()};
}

} // namespace

pseudonym_source::pseudonym_source(std::shared_ptr<epoch_store> epochs, const key256& lookup_key)
  : epochs_(std::move(epochs)), lookup_(lookup_key, "lockbridge/credential-lookup/v1") {
  refresh();
}

std::string pseudonym_source::operator()(std::string_view raw) const {
  auto key = lookup_(raw);
  std::shared_lock lock{mutex_};
  return (*by_epoch_.back())(as_text(key));
}

std::vector<std::string>
pseudonym_source::all_of(const protocol::keyed_hmac::mac_type& lookup_key) const {
  std::shared_lock lock{mutex_};
  std::vector<std::string> out;
  for (const auto& p : by_epoch_)
    out.push_back((*p)(as_text(lookup_key)));
  return out;
}

std::uint32_t pseudonym_source::epoch() const {
  std::shared_lock lock{mutex_};
  return by_epoch_.back()->epoch();
}

void pseudonym_source::refresh() {
  std::vector<std::shared_ptr<const protocol::pseudonymiser>> next;
  for (const auto& e : epochs_->all())
    next.push_back(std::make_shared<const protocol::pseudonymiser>(e.key, e.epoch));
  std::unique_lock lock{mutex_};
  by_epoch_ = std::move(next);
}

} // namespace lockbridge::store
