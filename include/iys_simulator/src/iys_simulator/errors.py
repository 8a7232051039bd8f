"""İYS error codes, their HTTP status and (Turkish) messages, and the error-body helpers."""

from __future__ import annotations

from typing import Any

# code -> (HTTP status, message). Messages follow the official table where it is known.
ERROR_CATALOGUE: dict[str, tuple[int, str]] = {
    "H000": (404, "Kayıt bulunamadı"),  # simulator-only: İYS does not document "recipient unknown"
    "H001": (404, "Hizmet sağlayıcı bulunamadı."),
    "H014": (400, "İstek gövdesi geçerli bir JSON olmalıdır."),
    "H015": (500, "Beklenmedik bir hata oluştu!"),
    "H084": (
        429,
        "Saatte kabul edilen kimlik doğrulama istek limitine ulaşıldı. Lütfen bir saat sonra tekrar deneyiniz.",
    ),
    "H085": (400, "İzin ekleme isteği geçerli olmalıdır."),
    "H086": (429, "Saatte kabul edilen tekil izin sorgulama limitine ulaşıldı."),
    "H092": (400, "Çoklu izin ekleme isteği geçerli olmalıdır."),
    "H093": (422, "İşlem numarası (transactionId) bulunamadı."),
    "H097": (400, "İzin sorgulama isteği geçerli olmalıdır."),
    "H098": (400, "İzin hareketi sorgulama isteği geçerli olmalıdır."),
    "H110": (422, "İzin durumu (status) alanı zorunludur."),
    "H111": (422, "İzin tipi (type) alanı zorunludur."),
    "H112": (422, "İzin tarihi (consentDate) alanı zorunludur."),
    "H113": (422, "İzin kaynağı (source) alanı zorunludur."),
    "H114": (422, "Alıcı (recipient) alanı zorunludur."),
    "H115": (422, "İzin durumu (status) ONAY, RET değerlerinden biri olmalıdır."),
    "H116": (422, "Alıcı tipi (recipientType) BIREYSEL, TACIR değerlerinden biri olmalıdır."),
    "H117": (422, "İzin tipi (type) ARAMA, MESAJ, EPOSTA değerlerinden biri olmalıdır."),
    "H118": (422, "İstek gövdesinde tanımlanmamış bir alan bulunmaktadır."),
    "H119": (
        422,
        "İzin kaynağı (source) HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, HS_WEB, HS_CAGRI_MERKEZI, HS_SOSYAL_MEDYA, "
        "HS_EPOSTA, HS_MESAJ, HS_MOBIL, HS_EORTAM, HS_ETKINLIK, HS_2015, HS_ATM, HS_KARAR değerlerinden biri olmalıdır.",
    ),
    "H120": (422, "Geçersiz e-posta adresi."),
    "H121": (422, "Telefon numarası E.164 formatında geçerli bir numara olmalıdır."),
    "H122": (422, "Alıcı (recipient) geçerli bir telefon numarası ya da e-posta adresi olmalıdır."),
    "H124": (429, "Saniyede kabul edilen istek limitine ulaşıldı"),
    "H125": (422, "Tek istekte gönderilebilecek kayıt sayısı en fazla 1000 olmalıdır."),
    "H155": (422, "HS_2015 kaynağı için izin tarihi 2015-05-01 00:00:00 olmalıdır."),
    "H156": (422, "1 Mayıs 2015 tarihinden önceki izinler kabul edilmemektedir."),
    "H157": (422, "Geçersiz tarih."),
    "H158": (422, "İzin tarihi (consentDate) yyyy-mm-dd hh:mm:ss formatında olmalıdır."),
    "H160": (422, "Telefon numarası en fazla 15 karakter olmalıdır."),
    "H162": (422, "İzin tarihi (consentDate) gelecek bir tarih olamaz."),
    "H164": (422, "Alıcı listesi (recipients) boş olamaz."),
    "H168": (422, "Alıcı listesi (recipients) alanı zorunludur."),
    "H169": (422, "Bayi erişim listesi (retailerAccess) alanı geçersiz."),
    "H170": (422, "Alıcı tipi (recipientType) alanı zorunludur."),
    "H174": (400, "İzin durumu (status) güncellemesi için farklı bir durum girilmelidir. İzin durumu: {status}"),
    "H175": (400, "İlk defa eklenecek izin RET durumunda olamaz."),
    "H178": (400, "İzin tarihi (consentDate), kayıtlı iznin tarihinden daha eski olamaz."),
    "H180": (403, "Bayi (retailerCode) bulunamadı."),
    "H190": (422, "iysCode tam sayı olmalıdır."),
    "H191": (422, "brandCode tam sayı olmalıdır."),
    "H192": (503, "İstek zaman aşımına uğradı."),
    "H193": (422, "Listede tekrar eden değer bulunmaktadır."),
    "H194": (422, "Aynı alıcı tipi, izin tipi ve alıcı için birden fazla izin gönderilemez."),
    "H198": (422, "requestId en fazla 36 karakter olmalıdır."),
    "H199": (422, "requestId yalnızca harflerden oluşamaz."),
    "H267": (422, "retailerCode alanı boş olamaz."),
    "H351": (401, "Eksik veya geçersiz jeton!"),
    "H353": (403, "{field} alanı için yetkiniz bulunmamaktadır."),
    "H400": (422, "requestId yalnızca rakamlardan oluşamaz."),
    "H408": (422, "HS_KARAR kaynağı yalnızca RET durumunda ve mevcut bir izin için kullanılabilir."),
    "H462": (400, "TACIR izin güncellemesinde izin tarihi (consentDate) zorunludur."),
    "H463": (400, "TACIR izin güncellemesinde izin kaynağı (source) zorunludur."),
    "H464": (422, "Alıcı (recipient) formatı izin tipi (type) ile uyumlu değildir."),
    "H467": (422, "Üç iş günü öncesinde alınan izinler kaydedilemez."),
    "H478": (422, "Alıcı listesi (recipients) liste olmalıdır."),
    "H501": (422, "reportDate yyyy-mm-dd formatında olmalıdır."),
    "H502": (422, "reportDate en fazla 7 gün öncesine ait olabilir."),
    "H512": (422, "agreementStatus yalnızca true olabilir."),
    "H530": (422, "Bağlantı oluşturulamadı."),
    "H531": (422, "Bağlantı adresi (url) https ile başlamalıdır."),
    "H506": (422, "source parametresi IYS veya HS olmalıdır."),
    "H507": (422, "limit parametresi 1 ile 1000 arasında olmalıdır."),
}

# The push link endpoints (push.py) give some codes a meaning of their own: the central table's H191
# ("brandCode must be an integer") and H093 ("transactionId not found") mean "connection timed out"
# and "username or password missing" there, and H530 is "could not be removed" for an unregistration.
# İYS documents only the meanings; the Turkish wording of these messages is the simulator's.
PUSH_ERROR_CATALOGUE: dict[str, tuple[int, str]] = {
    "H093": (422, "Kullanıcı adı (username) ve şifre (password) alanları zorunludur."),
    "H111": ERROR_CATALOGUE["H111"],
    "H117": ERROR_CATALOGUE["H117"],
    "H191": (422, "Bağlantı zaman aşımına uğradı."),
    "H530": ERROR_CATALOGUE["H530"],
    "H531": ERROR_CATALOGUE["H531"],
}
PUSH_UNREGISTER_FAILED_MESSAGE = "Bağlantı kaldırılamadı."


def error_item(
    code: str,
    *,
    location: list[Any] | None = None,
    value: Any = None,
    index: int | None = None,
    include_value: bool = False,
    **message_args: Any,
) -> dict[str, Any]:
    """One entry of an ``errors`` array; optional keys are omitted like İYS does."""
    message = ERROR_CATALOGUE[code][1]
    if message_args:
        message = message.format(**message_args)
    item: dict[str, Any] = {"code": code, "message": message}
    if location is not None:
        item["location"] = location
    if include_value or value is not None:
        item["value"] = value
    if index is not None:
        item["index"] = index
    return item


def http_status_of(code: str) -> int:
    return ERROR_CATALOGUE[code][0]


def errors_body(*items: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(items)}
